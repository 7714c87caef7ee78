// G²RL (arXiv 2512.15687): groupwise novelty of the sequence gradient features Φ and the reward shaping that
// feeds GRPO, as pure tensor functions (../shared/research/g2rl.md §3, §4, §7, §8). Φ itself is computed in
// the trainer's log-prob pass (spec §2.3); nothing here knows about models.
//
// Shapes: N responses in a batch, d the feature width; group_ids [N] int64, one id per prompt (any order,
// groups need not be contiguous). Base rewards are ±1 (spec §1): map {0,1} verifier scores with to_pm1 first.
// All arithmetic runs in fp64 on the input's device (the m×m Gram is tiny, and fp64 keeps it out of TF32 and
// keeps the min–max transform stable); shaped rewards come back as fp32.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace introspect::g2rl {

struct ShapingOptions {
  std::string mode = "literal";           // literal: f = 1 + λ·r·ν̄ (eq. 12, = r + λν̄ for r = ±1);
                                          // prose: f = 1 + λ·(2ν̄ − 1) ∈ [1−λ, 1+λ] (spec §4.2 mode B)
  double lambda = 0.5;                    // λ ≥ 0
  double clip = 3.0;                      // r̃ = r·f clipped to [−clip, clip] (paper §2.5: c = 3)
  std::string nu_norm = "minmax";         // minmax: ν̄ = (ν − min_g)/(max_g − min_g), 0.5 for the whole group
                                          // when max_g − min_g < 1e-6 | none: ν̄ = ν
  std::string zero_var_groups = "shape";  // shape (paper-literal) | skip: groups whose base rewards are all
                                          // equal keep r̃ = r (so GRPO gives them zero advantages)
  double eps = 1e-8;                      // in the Φ normalisation (eq. 9) and the weight denominator (eq. 10)
};

// Throws std::invalid_argument unless mode ∈ {literal, prose}, nu_norm ∈ {minmax, none},
// zero_var_groups ∈ {shape, skip}, lambda ≥ 0, clip > 0 and eps ≥ 0.
void validate(const ShapingOptions& options);

// Verifier scores [N] → ±1 fp32: +1 where score ≥ threshold, −1 elsewhere ({0,1} and {−1,+1} both map right).
at::Tensor to_pm1(const at::Tensor& scores, double threshold = 0.5);

// Eq. 10 for one group: w[i][j] = exp(r_j)·1{j≠i} / (Σ_{k≠i} exp(r_k) + eps), [m, m] fp64. Each row sums to
// 1 (up to eps) when m ≥ 2; a group of one has the all-zero row.
at::Tensor novelty_weights(const at::Tensor& rewards, double eps = 1e-8);

// Eqs. 9–11 for one group: features [m, d] (any float dtype), rewards [m] (±1 in G²RL, any values accepted).
// Returns ν [m] fp64 in [0, 1]: 1 − Σ_{j≠i} w_ij·cos²(Φ_i, Φ_j), floored at 0. A lone response gets ν = 1.
at::Tensor novelty(const at::Tensor& features, const at::Tensor& rewards, double eps = 1e-8);

// The same for a whole batch, group by group (no pair crosses a group). Returns ν [N] fp64.
at::Tensor batch_novelty(const at::Tensor& features, const at::Tensor& group_ids, const at::Tensor& rewards_pm1,
                         double eps = 1e-8);

// The whole batch: features [N, d], base rewards rewards_pm1 [N] in {−1, +1} (throws std::invalid_argument
// otherwise), group_ids [N] int64. Returns the shaped rewards r̃ [N] fp32, which replace r in GRPO's group
// standardisation (spec §1 step 5). When `metrics` is non-null, adds (never clears) these keys:
//   g2rl/nu_mean, g2rl/nu_mean_correct, g2rl/nu_std_correct, g2rl/nu_mean_incorrect, g2rl/nu_std_incorrect
//       ν before normalisation, over all responses / those with r = +1 / r = −1 (population std);
//   g2rl/phi_norm_mean, g2rl/phi_norm_min, g2rl/phi_norm_max, g2rl/phi_norm_p50   ‖Φ‖₂ over the batch
//       (p50 is the linearly interpolated median);
//   g2rl/cos_mean, g2rl/cos_neg_frac and the _cc (correct–correct), _mixed (correct–incorrect) and _ii
//       (incorrect–incorrect) variants: the mean cos(Φ_i, Φ_j) and the fraction below 0 over the unordered
//       pairs i < j *within each group*, the spec §7 protocol ("pairwise similarities within each problem's
//       responses"), pooled over the batch's groups;
//   g2rl/zero_var_group_frac      fraction of groups whose base rewards are all equal;
//   g2rl/zero_var_shaped_frac     of those, the fraction whose shaped rewards are not all (exactly) equal,
//                                 i.e. that get non-zero GRPO advantages from novelty alone;
//   g2rl/clip_frac                fraction of responses whose r·f was clipped;
//   g2rl/shaped_reward_mean, g2rl/shaped_reward_std   of r̃ over the batch.
// A statistic over an empty set (no correct response, no mixed pair, no zero-variance group) is NaN, which
// the metrics log writes as null.
at::Tensor shape_rewards(const at::Tensor& features, const at::Tensor& rewards_pm1, const at::Tensor& group_ids,
                         const ShapingOptions& options, std::map<std::string, double>* metrics = nullptr);

// ---- Gradient geometry (spec §7, "nearly 5×"; the analysis command of issue G item 5) ------------------------
struct PairStats {
  int64_t pairs = 0;
  double mean_cos = 0;  // NaN when pairs == 0
  double neg_frac = 0;  // fraction of pairs with cos < 0; NaN when pairs == 0
};

struct GeometryStats {
  PairStats all, correct_correct, mixed, incorrect_incorrect;
  // One entry per unordered within-group pair (i < j, batch indices), ordered by i then j:
  at::Tensor cosines;  // [P] fp64 cos(Φ_i, Φ_j) with the eq. 9 normalisation (a zero Φ has cosine 0)
  at::Tensor first;    // [P] int64 i
  at::Tensor second;   // [P] int64 j
  at::Tensor kind;     // [P] int64: how many of the two are correct (0 ii, 1 mixed, 2 cc)
};

// features [N, d]; group_ids [N] int64 (one per problem); correct [N], bool or numeric (> 0 is correct, so
// {0,1} and ±1 both work). Pairs never cross groups: the paper's 30 problems × C(8,2) = 840 pairs.
GeometryStats geometry(const at::Tensor& features, const at::Tensor& group_ids, const at::Tensor& correct,
                       double eps = 1e-8);

// Counts of `cosines` in `bins` equal bins over [−1, 1] (values outside are clamped into the end bins).
std::vector<int64_t> cosine_histogram(const at::Tensor& cosines, int64_t bins = 20);

}  // namespace introspect::g2rl
