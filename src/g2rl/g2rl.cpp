#include "introspect/g2rl/g2rl.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace introspect::g2rl {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kDegenerateRange = 1e-6;  // spec §4.3: min–max range below this gives ν̄ = 0.5

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("g2rl: " + what);
}

// Checks features [N, d] and a per-response vector [N]; returns N.
int64_t check_batch(const at::Tensor& features, const at::Tensor& per_response, const char* name) {
  require(features.defined() && features.dim() == 2, "features must be [N, d]");
  require(features.is_floating_point(), "features must be a floating-point tensor");
  require(per_response.defined() && per_response.dim() == 1 && per_response.size(0) == features.size(0),
          std::string(name) + " must be [N] with N = features.size(0)");
  return features.size(0);
}

void check_group_ids(const at::Tensor& features, const at::Tensor& group_ids) {
  check_batch(features, group_ids, "group_ids");
  require(!group_ids.is_floating_point() && group_ids.scalar_type() != torch::kBool,
          "group_ids must be an integer tensor");
}

// The cosine geometry of a batch, everything in fp64 on the features' device.
struct Geometry {
  at::Tensor norms;  // [N] ‖Φ_i‖₂
  at::Tensor cos;    // [N, N] S_ij = ⟨Φ̂_i, Φ̂_j⟩, eq. 9
  at::Tensor same;   // [N, N] bool: i and j share a group (diagonal included)
  at::Tensor peer;   // [N, N] bool: same group and j ≠ i
};

Geometry build_geometry(const at::Tensor& features, const at::Tensor& group_ids, double eps) {
  const auto phi = features.to(torch::kDouble);
  const auto gid = group_ids.to(phi.device(), torch::kLong);
  Geometry g;
  g.norms = phi.norm(2, /*dim=*/1);
  const auto unit = phi / (g.norms.unsqueeze(1) + eps);
  g.cos = unit.mm(unit.t());
  g.same = gid.unsqueeze(1) == gid.unsqueeze(0);
  const auto eye = torch::eye(phi.size(0), torch::TensorOptions().dtype(torch::kBool).device(phi.device()));
  g.peer = g.same & eye.logical_not();
  return g;
}

// Eqs. 10–11 given the cosines and the peer mask (rows of `peer` select the j ≠ i of i's group).
at::Tensor nu_from(const Geometry& g, const at::Tensor& r, double eps) {
  const auto e = r.exp().unsqueeze(0) * g.peer.to(torch::kDouble);  // e[i][j] = exp(r_j)·1{j peer of i}
  const auto w = e / (e.sum(1, /*keepdim=*/true) + eps);
  return (1.0 - (w * g.cos.square()).sum(1)).clamp_min(0.0);
}

// Per-response max / min of x over the response's group.
at::Tensor group_max(const at::Tensor& x, const at::Tensor& same) {
  const auto inf = std::numeric_limits<double>::infinity();
  return torch::where(same, x.unsqueeze(0).expand_as(same), torch::full({}, -inf, x.options())).amax(1);
}
at::Tensor group_min(const at::Tensor& x, const at::Tensor& same) {
  const auto inf = std::numeric_limits<double>::infinity();
  return torch::where(same, x.unsqueeze(0).expand_as(same), torch::full({}, inf, x.options())).amin(1);
}

double mean_or_nan(const at::Tensor& x) { return x.numel() == 0 ? kNaN : x.mean().item<double>(); }
double pop_std_or_nan(const at::Tensor& x) {
  return x.numel() == 0 ? kNaN : (x - x.mean()).square().mean().sqrt().item<double>();
}

PairStats pair_stats(const at::Tensor& cos) {
  PairStats s;
  s.pairs = cos.numel();
  s.mean_cos = mean_or_nan(cos);
  s.neg_frac = s.pairs == 0 ? kNaN : (cos < 0).to(torch::kDouble).mean().item<double>();
  return s;
}

// Within-group unordered pairs i < j, in row-major order.
GeometryStats pairs_of(const Geometry& g, const at::Tensor& correct) {
  GeometryStats out;
  const auto upper = torch::ones(g.same.sizes(), g.cos.options()).triu(1) > 0;
  const auto idx = (g.same & upper).nonzero();  // [P, 2]
  out.first = idx.select(1, 0).contiguous();
  out.second = idx.select(1, 1).contiguous();
  out.cosines = g.cos.index({out.first, out.second});
  const auto c = correct.to(torch::kLong);
  out.kind = c.index_select(0, out.first) + c.index_select(0, out.second);
  out.all = pair_stats(out.cosines);
  out.incorrect_incorrect = pair_stats(out.cosines.masked_select(out.kind == 0));
  out.mixed = pair_stats(out.cosines.masked_select(out.kind == 1));
  out.correct_correct = pair_stats(out.cosines.masked_select(out.kind == 2));
  return out;
}

}  // namespace

void validate(const ShapingOptions& o) {
  require(o.mode == "literal" || o.mode == "prose", "mode must be literal or prose, got '" + o.mode + "'");
  require(o.nu_norm == "minmax" || o.nu_norm == "none", "nu_norm must be minmax or none, got '" + o.nu_norm + "'");
  require(o.zero_var_groups == "shape" || o.zero_var_groups == "skip",
          "zero_var_groups must be shape or skip, got '" + o.zero_var_groups + "'");
  require(std::isfinite(o.lambda) && o.lambda >= 0, "lambda must be >= 0");
  require(o.clip > 0, "clip must be > 0");
  require(std::isfinite(o.eps) && o.eps >= 0, "eps must be >= 0");
}

at::Tensor to_pm1(const at::Tensor& scores, double threshold) {
  const auto s = scores.to(torch::kDouble);
  return torch::where(s >= threshold, torch::ones_like(s), -torch::ones_like(s)).to(torch::kFloat);
}

at::Tensor novelty_weights(const at::Tensor& rewards, double eps) {
  require(rewards.defined() && rewards.dim() == 1, "rewards must be [m]");
  const auto r = rewards.to(torch::kDouble);
  const auto eye = torch::eye(r.size(0), torch::TensorOptions().dtype(torch::kBool).device(r.device()));
  const auto e = r.exp().unsqueeze(0) * eye.logical_not().to(torch::kDouble);
  return e / (e.sum(1, /*keepdim=*/true) + eps);
}

at::Tensor novelty(const at::Tensor& features, const at::Tensor& rewards, double eps) {
  const auto n = check_batch(features, rewards, "rewards");
  const auto one_group = torch::zeros({n}, torch::TensorOptions().dtype(torch::kLong).device(features.device()));
  return batch_novelty(features, one_group, rewards, eps);
}

at::Tensor batch_novelty(const at::Tensor& features, const at::Tensor& group_ids, const at::Tensor& rewards_pm1,
                         double eps) {
  check_batch(features, rewards_pm1, "rewards");
  check_group_ids(features, group_ids);
  const auto g = build_geometry(features, group_ids, eps);
  return nu_from(g, rewards_pm1.to(g.cos.device(), torch::kDouble), eps);
}

at::Tensor shape_rewards(const at::Tensor& features, const at::Tensor& rewards_pm1, const at::Tensor& group_ids,
                         const ShapingOptions& o, std::map<std::string, double>* metrics) {
  validate(o);
  const auto n = check_batch(features, rewards_pm1, "rewards_pm1");
  check_group_ids(features, group_ids);
  const auto device = features.device();
  if (n == 0) return torch::empty({0}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  const auto r = rewards_pm1.to(device, torch::kDouble);
  require(((r == 1.0) | (r == -1.0)).all().item<bool>(),
          "base rewards must be -1 or +1 (map verifier scores with to_pm1 before shaping)");

  const auto g = build_geometry(features, group_ids, o.eps);
  const auto nu = nu_from(g, r, o.eps);

  // ν̄: group min–max (spec §4.3) or ν itself.
  at::Tensor nu_bar = nu;
  if (o.nu_norm == "minmax") {
    const auto lo = group_min(nu, g.same);
    const auto range = group_max(nu, g.same) - lo;
    nu_bar = torch::where(range < kDegenerateRange, torch::full_like(nu, 0.5),
                          (nu - lo) / range.clamp_min(kDegenerateRange));
  }
  // f (eq. 12 or spec §4.2 mode B), r̃ = r·f (eq. 13), clipped to ±c (paper §2.5).
  const auto f = o.mode == "literal" ? 1.0 + o.lambda * r * nu_bar : 1.0 + o.lambda * (2.0 * nu_bar - 1.0);
  const auto raw = r * f;
  auto shaped = raw.clamp(-o.clip, o.clip);
  const auto zero_var = group_max(r, g.same) == group_min(r, g.same);  // [N], per response's group
  auto clipped = raw.abs() > o.clip;
  if (o.zero_var_groups == "skip") {
    shaped = torch::where(zero_var, r, shaped);
    clipped = clipped & zero_var.logical_not();
  }

  if (metrics) {
    auto& m = *metrics;
    const auto correct = r > 0;
    m["g2rl/nu_mean"] = nu.mean().item<double>();
    const auto nu_c = nu.masked_select(correct), nu_i = nu.masked_select(correct.logical_not());
    m["g2rl/nu_mean_correct"] = mean_or_nan(nu_c);
    m["g2rl/nu_std_correct"] = pop_std_or_nan(nu_c);
    m["g2rl/nu_mean_incorrect"] = mean_or_nan(nu_i);
    m["g2rl/nu_std_incorrect"] = pop_std_or_nan(nu_i);

    m["g2rl/phi_norm_mean"] = g.norms.mean().item<double>();
    m["g2rl/phi_norm_min"] = g.norms.min().item<double>();
    m["g2rl/phi_norm_max"] = g.norms.max().item<double>();
    m["g2rl/phi_norm_p50"] = torch::quantile(g.norms, 0.5).item<double>();

    // Spec §7 pairs within each problem's responses, so within each group here, pooled over the batch.
    const auto pairs = pairs_of(g, correct);
    const std::pair<const char*, const PairStats*> kinds[] = {
        {"", &pairs.all}, {"_cc", &pairs.correct_correct}, {"_mixed", &pairs.mixed},
        {"_ii", &pairs.incorrect_incorrect}};
    for (const auto& [suffix, s] : kinds) {
      m[std::string("g2rl/cos_mean") + suffix] = s->mean_cos;
      m[std::string("g2rl/cos_neg_frac") + suffix] = s->neg_frac;
    }

    // Group counts: each member of a group of size k carries weight 1/k.
    const auto inv_size = 1.0 / g.same.to(torch::kDouble).sum(1);
    const auto shaped64 = shaped.to(torch::kDouble);
    const auto varied = group_max(shaped64, g.same) > group_min(shaped64, g.same);
    const double groups = inv_size.sum().item<double>();
    const double zv_groups = (inv_size * zero_var.to(torch::kDouble)).sum().item<double>();
    const double zv_shaped = (inv_size * (zero_var & varied).to(torch::kDouble)).sum().item<double>();
    m["g2rl/zero_var_group_frac"] = zv_groups / groups;
    m["g2rl/zero_var_shaped_frac"] = std::lround(zv_groups) == 0 ? kNaN : zv_shaped / zv_groups;
    m["g2rl/clip_frac"] = clipped.to(torch::kDouble).mean().item<double>();
    m["g2rl/shaped_reward_mean"] = shaped64.mean().item<double>();
    m["g2rl/shaped_reward_std"] = pop_std_or_nan(shaped64);
  }
  return shaped.to(torch::kFloat);
}

GeometryStats geometry(const at::Tensor& features, const at::Tensor& group_ids, const at::Tensor& correct,
                       double eps) {
  check_batch(features, correct, "correct");
  check_group_ids(features, group_ids);
  const auto g = build_geometry(features, group_ids, eps);
  const auto c = correct.to(g.cos.device());
  return pairs_of(g, c.scalar_type() == torch::kBool ? c : c > 0);
}

std::vector<int64_t> cosine_histogram(const at::Tensor& cosines, int64_t bins) {
  require(bins >= 1, "histogram needs at least one bin");
  const auto c = cosines.detach().to(torch::kCPU, torch::kDouble).reshape({-1}).clamp(-1.0, 1.0);
  const auto bin = ((c + 1.0) * 0.5 * static_cast<double>(bins)).floor().to(torch::kLong).clamp(0, bins - 1);
  const auto counts = torch::bincount(bin, /*weights=*/{}, bins);
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + bins);
}

}  // namespace introspect::g2rl
