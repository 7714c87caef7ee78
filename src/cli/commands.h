// Subcommands with more than a few lines each live in their own file under src/cli.
#pragma once

#include <cstdint>
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

struct EvalOptions {
  std::string model, data, config, out = "runs/eval", chat_template;
  int64_t n = 0;      // samples per problem; 0: rollout.n from --config or an override, else 1
  std::string ks;     // "1,4,16"; empty: 1, 2, 4, ... up to n, and n
  int64_t limit = 0;  // the first `limit` problems only; 0 means all
  std::vector<std::string> overrides;
};
int eval(const EvalOptions& options);

struct AnalyzeGeometryOptions {
  std::string model, data, config, out = "runs/g2rl-geometry", chat_template;
  int64_t k = 8;          // responses per problem (sets rollout.n)
  int64_t problems = 50;  // at most this many problems; 0 means all
  int64_t bins = 20;      // histogram bins over [-1, 1]
  bool shuffle = false;   // a seeded (rollout.seed) random subset instead of the first problems
  std::vector<std::string> overrides;
};
int analyze_g2rl_geometry(const AnalyzeGeometryOptions& options);

struct AnalyzeMasaGateOptions {
  std::string model, data, config, out = "runs/masa-gate", chat_template;
  int64_t problems = 0;  // at most this many problems; 0 means all
  bool shuffle = false;  // a seeded (rollout.seed) random subset instead of the first problems
  std::vector<std::string> overrides;
};
int analyze_masa_gate(const AnalyzeMasaGateOptions& options);

struct VerifyOptions {
  std::string cases;       // JSONL of {"gold": ..., "pred": ...}
  double timeout_s = 2.0;  // per line
  bool extract = false;    // pred is a model response: its answer is extracted first
};
int verify(const VerifyOptions& options);

}  // namespace introspect::cli
