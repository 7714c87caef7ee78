// Batched generation on the policy's own weights: continuous batching over preallocated KV-cache slots, n
// samples per prompt sharing one prefill, a per-sample RNG stream, and the log-probs the trainer's ratio needs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "introspect/model/decoder.h"

namespace introspect::tokenizer {
class Tokenizer;
}
namespace introspect::config {
struct RolloutConfig;
}

namespace introspect::rollout {

struct SamplingParams {
  double temperature = 1.0;  // 0 means greedy
  double top_p = 1.0;
  int64_t top_k = -1;
  double min_p = 0.0;
  bool greedy = false;
  int64_t max_new_tokens = 256;
  std::vector<int32_t> stop_token_ids;  // finish "stop"; the model's own EOS ids always finish "eos"
  std::vector<std::string> stop;        // stop strings (need a tokenizer)
  int64_t n = 1;                        // samples per prompt (unless the Prompt sets its own)
  uint64_t seed = 0;
  bool is_greedy() const { return greedy || temperature == 0.0; }
};

struct Prompt {
  std::vector<int32_t> ids;
  int64_t max_new_tokens = -1;  // per-sequence limit (MASA's early cutoff); -1 uses SamplingParams'
  // The prompt index its samples' RNG streams are keyed on (sample_seed); -1 uses its position in the call.
  // Data-parallel ranks pass the prompt's index in the global batch, so a rank draws what one process would.
  int64_t stream = -1;
  // Samples of this prompt; -1 uses SamplingParams' n. Lets one call mix groups of different sizes (MASA's
  // meta and solution rollouts share a batch).
  int64_t n = -1;
};

enum class FinishReason { kEos, kStop, kLength };
const char* finish_reason_name(FinishReason r);

struct Sample {
  int64_t prompt_index = 0, sample_index = 0;
  std::vector<int32_t> tokens;
  // log p(token) under softmax(logits / temperature), before any top-k/top-p/min-p truncation (plain
  // log-softmax when greedy): what the PPO ratio needs.
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kLength;
};

// The rollout.* keys as sampling parameters (n, seed, limits, filters, stops).
SamplingParams sampling_params(const config::RolloutConfig& rollout);

// Picks next tokens for a batch. logits [B, V]; uniforms [B] in [0, 1), one per row from that row's own RNG.
// Returns (tokens [B] int64, logprobs [B] fp32). Filters apply in HF's order: temperature, top-k, top-p, min-p,
// each renormalising; sampling is the inverse CDF of the filtered distribution at the row's uniform.
std::pair<at::Tensor, at::Tensor> sample_tokens(const at::Tensor& logits, const SamplingParams& params,
                                                const at::Tensor& uniforms);

// The seed of sample (prompt_index, sample_index): it does not depend on batch size or slot order.
uint64_t sample_seed(uint64_t seed, int64_t prompt_index, int64_t sample_index);

class Generator {
 public:
  // max_batch: KV-cache slots generated at once (never changes outputs). kv_budget_bytes bounds the cache, which
  // is sized up front; 0 means no bound. tokenizer is needed only for stop strings.
  Generator(const model::CausalLM& model, int64_t max_batch, int64_t kv_budget_bytes = 0,
            const tokenizer::Tokenizer* tokenizer = nullptr);

  // Every sample of every prompt, ordered by (prompt_index, sample_index). `progress` is called with the number
  // of samples finished so far.
  std::vector<Sample> generate(const std::vector<Prompt>& prompts, const SamplingParams& params,
                               const std::function<void(int64_t)>& progress = {}) const;

 private:
  const model::CausalLM& model_;
  int64_t max_batch_, kv_budget_bytes_;
  const tokenizer::Tokenizer* tokenizer_;
};

}  // namespace introspect::rollout
