// A user message to prompt ids, as the run's config says: system prompt, chat template (resolved once from
// the checkpoint when "auto"), thinking switch. The trainer, `generate` and `eval` all format prompts here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "introspect/tokenizer/chat_template.h"

namespace introspect::config {
struct DataConfig;
}

namespace introspect::tokenizer {

class Tokenizer;

class PromptFormatter {
 public:
  // checkpoint: the folder whose tokenizer_config.json "auto" reads. `template_name` overrides data.chat_template.
  PromptFormatter(const config::DataConfig& data, const Tokenizer& tokenizer, const std::filesystem::path& checkpoint,
                  const std::string& template_name = "");
  std::vector<int32_t> encode(const std::string& user_message) const;
  const ChatTemplate& chat_template() const { return template_; }

 private:
  const Tokenizer& tokenizer_;
  ChatTemplate template_;
  std::string system_prompt_;
  bool enable_thinking_;
};

}  // namespace introspect::tokenizer
