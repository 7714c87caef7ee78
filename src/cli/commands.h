// Subcommands with more than a few lines each live in their own file under src/cli.
#pragma once

#include <string>
#include <vector>

namespace introspect::cli {

struct GenerateOptions {
  std::string model, tokenizer, prompts, out, config, chat_template;
  std::vector<std::string> overrides;  // rollout.* etc. from the flags, applied after --config
};
int generate(const GenerateOptions& options);

}  // namespace introspect::cli
