#include "introspect/tokenizer/prompt_format.h"

#include "introspect/config/schema.h"
#include "introspect/tokenizer/tokenizer.h"

namespace introspect::tokenizer {
namespace {
ChatTemplate resolve(const config::DataConfig& data, const Tokenizer& tok, const std::filesystem::path& checkpoint,
                     const std::string& override_name) {
  const std::string name = override_name.empty() ? data.chat_template : override_name;
  if (name == "auto") return ChatTemplate::from_checkpoint(checkpoint);
  return ChatTemplate::by_name(name, data.custom_chat_template, tok.bos_id() ? tok.decode({*tok.bos_id()}) : "");
}
}  // namespace

PromptFormatter::PromptFormatter(const config::DataConfig& data, const Tokenizer& tokenizer,
                                 const std::filesystem::path& checkpoint, const std::string& template_name)
    : tokenizer_(tokenizer),
      template_(resolve(data, tokenizer, checkpoint, template_name)),
      system_prompt_(data.system_prompt),
      enable_thinking_(data.enable_thinking) {}

std::vector<int32_t> PromptFormatter::encode(const std::string& user_message) const {
  std::vector<ChatMessage> messages;
  if (!system_prompt_.empty()) messages.push_back({"system", system_prompt_, std::nullopt});
  messages.push_back({"user", user_message, std::nullopt});
  // Chat templates write their own BOS; plain and custom text gets the tokenizer's usual special tokens.
  const bool add_special = template_.name() == "plain" || template_.name() == "custom";
  return tokenizer_.encode(template_.render(messages, /*add_generation_prompt=*/true, enable_thinking_), add_special);
}

}  // namespace introspect::tokenizer
