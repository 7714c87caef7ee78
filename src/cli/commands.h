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

struct TrainOptions {
  std::string config, out, resume;
  std::vector<std::string> overrides;
};
int train(const TrainOptions& options);

struct VerifyOptions {
  std::string cases;       // JSONL of {"gold": ..., "pred": ...}
  double timeout_s = 2.0;  // per line
  bool extract = false;    // pred is a model response: its answer is extracted first
};
int verify(const VerifyOptions& options);

}  // namespace introspect::cli
