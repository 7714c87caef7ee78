// Held-out evaluation: n samples per problem on the engine's generator, graded by the math verifier, summarised
// as pass@1 (mean accuracy), unbiased pass@k and maj@k (majority vote over normalised answers, seeded ties).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "introspect/io/dataset.h"
#include "introspect/rollout/generator.h"

namespace introspect::tokenizer {
class Tokenizer;
class PromptFormatter;
}  // namespace introspect::tokenizer
namespace introspect::config {
struct MathRewardConfig;
}

namespace introspect::train {

struct ProblemResult {
  int64_t index = 0;
  std::string source;  // the problem's "file:line" (io::Problem::source)
  std::vector<std::string> responses, answers;  // answers: extracted and normalised ("" when none)
  std::vector<bool> correct;
  std::vector<int64_t> response_tokens;       // per sample
  std::vector<rollout::FinishReason> finish;  // per sample
  int64_t prompt_tokens = 0;
  bool skipped = false;  // the prompt exceeded the length limit
};

struct EvalSummary {
  int64_t problems = 0, samples = 0, skipped = 0;
  double pass_at_1 = 0;
  std::map<int64_t, double> pass_at_k, maj_at_k;
  double mean_response_tokens = 0;
  double seconds = 0;
};

// Samples params.n responses per problem. Problems whose prompt is longer than max_prompt_tokens are skipped and
// counted. ks lists the k of pass@k and maj@k (each must be <= n; others are ignored). maj@k's ties are drawn
// with seed + the problem's index. `progress` is called with the number of samples generated so far.
// With a shard, only the problems whose index is rank mod world are evaluated; samples are keyed on the
// problem's index, so the shards' results together are the unsharded run's.
struct EvalShard {
  int64_t rank = 0, world = 1;
};
EvalSummary evaluate(const rollout::Generator& generator, const tokenizer::Tokenizer& tok,
                     const tokenizer::PromptFormatter& format, const std::vector<io::Problem>& problems,
                     const rollout::SamplingParams& params, const config::MathRewardConfig& grading,
                     int64_t max_prompt_tokens, const std::vector<int64_t>& ks, uint64_t seed,
                     std::vector<ProblemResult>* per_problem = nullptr,
                     const std::function<void(int64_t)>& progress = {}, const EvalShard& shard = {});

}  // namespace introspect::train
