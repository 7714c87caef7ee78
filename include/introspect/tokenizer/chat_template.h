// Chat templates for the formats users train with, rendered natively (no Jinja engine): they produce the same
// strings as transformers' apply_chat_template with the checkpoints' own Jinja templates.
//   qwen3   Qwen3's ChatML, with <think> handling: past assistant turns lose their reasoning, the generation
//           prompt ends with an empty <think></think> block when thinking is disabled.
//   llama3  Llama-3's header format (BOS, trimmed contents); like its Jinja template, it always ends with the
//           assistant header.
//   plain   base models: the system text, a blank line, then the messages' contents separated by blank lines.
//   custom  a single-turn string with {system} and {user} placeholders, e.g. "{system}\nQ: {user}\nA:".
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace introspect::tokenizer {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
  std::optional<std::string> reasoning_content;  // assistant turns (Qwen3)
};

class ChatTemplate {
 public:
  // name: qwen3 | llama3 | plain | custom ("custom" takes `custom_text`). Throws naming unknown names.
  static ChatTemplate by_name(const std::string& name, const std::string& custom_text = "",
                              const std::string& bos_token = "");
  // Recognises the Jinja chat_template of a checkpoint's tokenizer_config.json (a folder or the file itself).
  // An unrecognised template is an error that says so and lists the names to choose instead.
  static ChatTemplate from_checkpoint(const std::filesystem::path& path);

  // Throws std::invalid_argument for a role or conversation shape the template does not support.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     bool enable_thinking = true) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_, custom_text_, bos_token_;
};

}  // namespace introspect::tokenizer
