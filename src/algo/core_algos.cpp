#include "introspect/algo/core_algos.h"

#include <torch/torch.h>

#include <map>
#include <stdexcept>

namespace introspect::algo {
namespace {

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Per-group count, mean and variance (population or unbiased) of `scores`, gathered back to every sample.
struct GroupStats {
  at::Tensor count, mean, var;
};
GroupStats group_stats(const at::Tensor& scores, const at::Tensor& group_ids, bool unbiased) {
  TORCH_CHECK(scores.dim() == 1 && group_ids.dim() == 1 && scores.size(0) == group_ids.size(0),
              "advantages: scores [B] and group_ids [B] expected");
  const auto r = scores.to(torch::kDouble);
  const auto [uniq, inverse] = at::_unique(group_ids, /*sorted=*/true, /*return_inverse=*/true);
  const int64_t g = uniq.size(0);
  auto count = torch::zeros({g}, r.options()).index_add_(0, inverse, torch::ones_like(r));
  auto sum = torch::zeros({g}, r.options()).index_add_(0, inverse, r);
  const auto mean = (sum / count).index_select(0, inverse);
  auto sq = torch::zeros({g}, r.options()).index_add_(0, inverse, (r - mean).square());
  const auto n = count.index_select(0, inverse);
  const auto var = sq.index_select(0, inverse) / (unbiased ? (n - 1).clamp_min(1) : n);
  return {n, mean, var};
}

}  // namespace

at::Tensor grpo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions& o) {
  const auto st = group_stats(scores, group_ids, o.unbiased_std);
  const auto r = scores.to(torch::kDouble);
  const auto lone = st.count == 1;
  const auto mean = torch::where(lone, torch::zeros_like(st.mean), st.mean);
  if (!o.norm_by_std) return (r - mean).to(torch::kFloat);
  const auto var = torch::where(lone, torch::ones_like(st.var), st.var);
  const auto denom = o.epsilon_inside_sqrt ? (var + o.epsilon).sqrt() : var.sqrt() + o.epsilon;
  return ((r - mean) / denom).to(torch::kFloat);
}

at::Tensor drgrpo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions& o) {
  auto plain = o;
  plain.norm_by_std = false;
  return grpo_advantages(scores, group_ids, plain);
}

at::Tensor rloo_advantages(const at::Tensor& scores, const at::Tensor& group_ids, const AdvantageOptions&) {
  const auto st = group_stats(scores, group_ids, true);
  const auto r = scores.to(torch::kDouble);
  const auto scale = st.count / (st.count - 1).clamp_min(1);
  return torch::where(st.count > 1, (r - st.mean) * scale, r).to(torch::kFloat);
}

const AdvantageFn& advantage_estimator(const std::string& name) {
  static const std::map<std::string, AdvantageFn> registry = {
      {"grpo", grpo_advantages}, {"drgrpo", drgrpo_advantages}, {"rloo", rloo_advantages}};
  const auto it = registry.find(name);
  if (it == registry.end())
    throw std::invalid_argument("unknown advantage estimator '" + name + "' (valid: " +
                                join(advantage_estimator_names()) + ")");
  return it->second;
}

std::vector<std::string> advantage_estimator_names() { return {"drgrpo", "grpo", "rloo"}; }

at::Tensor zero_variance_groups(const at::Tensor& scores, const at::Tensor& group_ids) {
  const auto st = group_stats(scores, group_ids, false);
  return st.var <= 0;
}

PolicyLossTerms vanilla_policy_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                                    const PolicyLossOptions& o) {
  TORCH_CHECK(o.clip_ratio_c > 1.0, "policy loss: clip_ratio_c must be > 1");
  const auto log_ratio = (logp - old_logp).clamp(-20.0, 20.0);
  const auto ratio = log_ratio.exp();
  const auto& a = advantages;
  const auto loss1 = -a * ratio;
  const auto loss2 = -a * ratio.clamp(1.0 - o.clip_ratio_low, 1.0 + o.clip_ratio_high);
  const auto clipped = torch::maximum(loss1, loss2);
  const auto loss3 = -a * o.clip_ratio_c;
  const auto negative = a < 0;
  PolicyLossTerms t;
  t.token_loss = torch::where(negative, torch::minimum(clipped, loss3), clipped);
  t.clipped_high = (loss2 > loss1) & (a > 0);
  t.clipped_low = (loss2 > loss1) & negative;
  t.dual_clipped = (clipped > loss3) & negative;
  t.neg_log_ratio = -log_ratio.detach();
  return t;
}

const PolicyLossFn& policy_loss(const std::string& name) {
  static const std::map<std::string, PolicyLossFn> registry = {{"vanilla", vanilla_policy_loss}};
  const auto it = registry.find(name);
  if (it == registry.end()) throw std::invalid_argument("unknown policy loss '" + name + "' (valid: vanilla)");
  return it->second;
}

at::Tensor aggregate_loss(const at::Tensor& token_loss, const at::Tensor& mask, const std::string& mode,
                          const AggregationScale& scale) {
  TORCH_CHECK(token_loss.sizes() == mask.sizes() && token_loss.dim() == 2, "aggregate_loss: [B, T] loss and mask");
  const auto m = mask.to(token_loss.scalar_type());
  const double dp = static_cast<double>(scale.dp_size);
  const auto masked = token_loss * m;
  if (mode == "token-mean") {
    const auto tokens = scale.global_tokens > 0 ? torch::full({}, scale.global_tokens, m.options()) : m.sum();
    return masked.sum() / tokens.clamp_min(1) * dp;
  }
  if (mode == "token-sum") return masked.sum() * dp;
  const auto lengths = m.sum(-1);
  const auto has_tokens = (lengths > 0).to(m.scalar_type());
  const auto sequences =
      scale.global_sequences > 0 ? torch::full({}, scale.global_sequences, m.options()) : has_tokens.sum();
  if (mode == "seq-mean-token-sum" || mode == "seq-mean-token-sum-norm") {
    auto loss = (masked.sum(-1) * has_tokens).sum() / sequences.clamp_min(1) * dp;
    if (mode == "seq-mean-token-sum") return loss;
    const double factor = scale.loss_scale_factor > 0 ? scale.loss_scale_factor : static_cast<double>(mask.size(1));
    return loss / factor;
  }
  if (mode == "seq-mean-token-mean") {
    const auto seq = masked.sum(-1) / (lengths + 1e-8);
    return (seq * has_tokens).sum() / sequences.clamp_min(1) * dp;
  }
  throw std::invalid_argument("unknown loss aggregation mode '" + mode + "' (valid: " +
                              join(loss_aggregation_modes()) + ")");
}

std::vector<std::string> loss_aggregation_modes() {
  return {"token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"};
}

at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, const std::string& type) {
  if (!type.empty() && type.back() == '+') {
    // Straight-through: the value of the named estimator, the gradient of k2.
    const auto k2 = 0.5 * (logp - ref_logp).square();
    return k2 - k2.detach() + kl_penalty(logp, ref_logp, type.substr(0, type.size() - 1)).detach();
  }
  if (type == "k1" || type == "kl") return logp - ref_logp;
  if (type == "abs") return (logp - ref_logp).abs();
  if (type == "k2" || type == "mse") return 0.5 * (logp - ref_logp).square();
  if (type == "k3" || type == "low_var_kl") {
    const auto d = (ref_logp - logp).clamp(-20.0, 20.0);
    return (d.exp() - d - 1).clamp(-10.0, 10.0);
  }
  throw std::invalid_argument("unknown KL estimator '" + type + "' (valid: k1, kl, abs, k2, mse, k3, low_var_kl, "
                              "and each with a trailing +)");
}

at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask) {
  const auto m = mask.to(x.scalar_type());
  return (x * m).sum() / m.sum().clamp_min(1);
}

}  // namespace introspect::algo
