// The RL math as pure functions on tensors, picked by name (verl's core_algos.py is the model; the formulas are
// in ../shared/research/anchors.md §2). Nothing here knows about models, files or processes.
// Shapes: per-sequence tensors are [B]; per-token tensors are [B, T] with a 0/1 response mask of the same shape.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

namespace introspect::algo {

// ---- Advantages -------------------------------------------------------------------------------------------
struct AdvantageOptions {
  bool norm_by_std = true;           // GRPO divides by the group std; false gives Dr.GRPO's r - mean
  bool unbiased_std = true;          // N-1 (verl, TRL, OpenRLHF) or N (open-instruct's np.std)
  double epsilon = 1e-6;             // verl 1e-6, TRL 1e-4, OpenRLHF 1e-9
  bool epsilon_inside_sqrt = false;  // (r - mean) / sqrt(var + eps) instead of (r - mean) / (std + eps)
};

// scores [B] (any float dtype); group_ids [B] int64, one id per prompt. Returns fp32 advantages [B].
using AdvantageFn = std::function<at::Tensor(const at::Tensor& scores, const at::Tensor& group_ids,
                                             const AdvantageOptions& options)>;

// GRPO: (r - mean_g) / (std_g + eps). A group of one sample uses mean 0 and std 1, as verl does.
at::Tensor grpo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions& options);
// Dr.GRPO: r - mean_g (GRPO with norm_by_std forced off).
at::Tensor drgrpo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions& options);
// RLOO: r minus the mean of the group's other samples, i.e. (r - mean_g) * n / (n - 1); a lone sample keeps r.
at::Tensor rloo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions& options);

// Registry: "grpo", "drgrpo", "rloo". Throws std::invalid_argument listing the names.
const AdvantageFn& advantage_estimator(const std::string& name);
std::vector<std::string> advantage_estimator_names();

// Groups whose scores are all equal (zero std): DAPO's dynamic sampling drops them. Returns bool [B].
at::Tensor zero_variance_groups(const at::Tensor& scores, const at::Tensor& group_ids);

// ---- Policy loss ------------------------------------------------------------------------------------------
struct PolicyLossOptions {
  double clip_ratio_low = 0.2;   // ratio floor 1 - low
  double clip_ratio_high = 0.2;  // ratio ceiling 1 + high (DAPO clip-higher: 0.28)
  double clip_ratio_c = 3.0;     // dual-clip bound for negative advantages
};

struct PolicyLossTerms {
  at::Tensor token_loss;    // [B, T], differentiable in logp
  at::Tensor clipped_high;  // [B, T] bool: ratio above 1 + high with A > 0 (the clip binds)
  at::Tensor clipped_low;   // [B, T] bool: ratio below 1 - low with A < 0
  at::Tensor dual_clipped;  // [B, T] bool: the dual-clip bound binds (A < 0)
  at::Tensor neg_log_ratio; // [B, T] old_logp - logp, clamped: verl's ppo_kl before the masked mean
};

// verl's vanilla PPO clip with dual clip. logp, old_logp, advantages: [B, T] (advantages broadcast per token).
PolicyLossTerms vanilla_policy_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                                    const PolicyLossOptions& options);
using PolicyLossFn = std::function<PolicyLossTerms(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const PolicyLossOptions&)>;
// Registry: "vanilla".
const PolicyLossFn& policy_loss(const std::string& name);

// ---- Loss aggregation -------------------------------------------------------------------------------------
// Global counts make a micro-batch's share independent of how the batch is split across micro-batches and
// ranks (verl's agg_loss): pass the whole mini-batch's token and sequence counts. Non-positive values fall
// back to the local counts of `mask`.
struct AggregationScale {
  double global_tokens = -1;      // response tokens in the mini-batch
  double global_sequences = -1;   // sequences with at least one response token in the mini-batch
  double loss_scale_factor = -1;  // seq-mean-token-sum-norm's constant; default: the padded length mask.size(1)
  int64_t dp_size = 1;            // cancels the gradient averaging across data-parallel ranks
};

// Modes: token-mean, token-sum, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm.
at::Tensor aggregate_loss(const at::Tensor& token_loss, const at::Tensor& mask, const std::string& mode,
                          const AggregationScale& scale = {});
std::vector<std::string> loss_aggregation_modes();

// ---- KL ---------------------------------------------------------------------------------------------------
// Per-token KL estimate between the policy (logp) and the reference (ref_logp), verl's kl_penalty:
// k1/kl: x - y; abs: |x - y|; k2/mse: (x - y)^2 / 2; k3/low_var_kl: clamp(e^d - d - 1, -10, 10) with
// d = clamp(y - x, -20, 20). A trailing '+' (e.g. "k3+") keeps the value and takes k2's gradient.
at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, const std::string& type);

// ---- Helpers for metrics ----------------------------------------------------------------------------------
// sum(x * mask) / sum(mask), 0 when the mask is empty.
at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask);

}  // namespace introspect::algo
