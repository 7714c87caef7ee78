// G²RL novelty, reward shaping and gradient-geometry metrics (../shared/research/g2rl.md §3, §4, §7, §8).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <vector>

#include "introspect/g2rl/g2rl.h"

namespace g2rl = introspect::g2rl;

namespace {

using Matrix = std::vector<std::vector<double>>;

at::Tensor tensor_of(const Matrix& rows, torch::Dtype dtype = torch::kFloat) {
  const int64_t n = static_cast<int64_t>(rows.size()), d = n ? static_cast<int64_t>(rows[0].size()) : 0;
  std::vector<double> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat, torch::kDouble).reshape({n, d}).to(dtype);
}
at::Tensor vec(const std::vector<double>& v) { return torch::tensor(v, torch::kDouble).to(torch::kFloat); }
at::Tensor ids(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); }
std::vector<double> to_vec(const at::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ---- A plain-loop reference, written from the spec's equations (eqs. 9–13, §4.2–4.3), independent of the library.
std::vector<double> ref_novelty(const Matrix& phi, const std::vector<double>& r, double eps) {
  const size_t m = phi.size();
  Matrix unit(m);
  for (size_t i = 0; i < m; ++i) {
    double sq = 0;
    for (double x : phi[i]) sq += x * x;
    const double norm = std::sqrt(sq);
    for (double x : phi[i]) unit[i].push_back(x / (norm + eps));  // eq. 9
  }
  std::vector<double> nu(m);
  for (size_t i = 0; i < m; ++i) {
    double denom = eps;
    for (size_t k = 0; k < m; ++k)
      if (k != i) denom += std::exp(r[k]);
    double explained = 0;
    for (size_t j = 0; j < m; ++j) {
      if (j == i) continue;
      double s = 0;
      for (size_t t = 0; t < unit[i].size(); ++t) s += unit[i][t] * unit[j][t];
      explained += std::exp(r[j]) / denom * s * s;  // eq. 10 weight times S²
    }
    nu[i] = std::max(1.0 - explained, 0.0);  // eq. 11
  }
  return nu;
}

std::vector<double> ref_shape_group(const Matrix& phi, const std::vector<double>& r, const g2rl::ShapingOptions& o) {
  const auto nu = ref_novelty(phi, r, o.eps);
  const size_t m = r.size();
  std::vector<double> nu_bar = nu;
  if (o.nu_norm == "minmax") {
    const double lo = *std::min_element(nu.begin(), nu.end()), hi = *std::max_element(nu.begin(), nu.end());
    for (size_t i = 0; i < m; ++i) nu_bar[i] = hi - lo < 1e-6 ? 0.5 : (nu[i] - lo) / (hi - lo);
  }
  bool all_equal = true;
  for (size_t i = 1; i < m; ++i) all_equal = all_equal && r[i] == r[0];
  std::vector<double> out(m);
  for (size_t i = 0; i < m; ++i) {
    if (all_equal && o.zero_var_groups == "skip") {
      out[i] = r[i];
      continue;
    }
    const double f = o.mode == "literal" ? 1 + o.lambda * r[i] * nu_bar[i] : 1 + o.lambda * (2 * nu_bar[i] - 1);
    out[i] = std::min(std::max(r[i] * f, -o.clip), o.clip);
  }
  return out;
}

// The hand-computed group: Φ = e1, e2, (e1+e2)/√2 with r = +1, −1, +1. S01 = 0, S02² = S12² = 1/2.
// ν0 = 1 − a/2 with a = e²/(e²+1) (weight of the correct peer 2 against the incorrect peer 1),
// ν1 = 1 − ½·0 − ½·½ = 0.75 (two correct peers, equal weights), ν2 = 1 − a/2 − (1−a)/2 = 0.5.
const double kA = std::exp(2.0) / (std::exp(2.0) + 1);
Matrix hand_features() { return {{1, 0}, {0, 1}, {M_SQRT1_2, M_SQRT1_2}}; }
std::vector<double> hand_rewards() { return {1, -1, 1}; }
std::vector<double> hand_nu() { return {1 - kA / 2, 0.75, 0.5}; }
std::vector<double> hand_nu_bar() { return {(0.5 - kA / 2) / 0.25, 1.0, 0.0}; }  // min 0.5, max 0.75

std::vector<double> shape(const Matrix& phi, const std::vector<double>& r, const std::vector<int64_t>& gid,
                          const g2rl::ShapingOptions& o, std::map<std::string, double>* metrics = nullptr) {
  return to_vec(g2rl::shape_rewards(tensor_of(phi), vec(r), ids(gid), o, metrics));
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "index " << i;
}

}  // namespace

// ---- ν (spec §8 item 2) -----------------------------------------------------------------------------------------

TEST(G2rlNovelty, IdenticalFeaturesGiveZeroAndTheDegenerateRangeGivesHalf) {
  const Matrix phi(4, std::vector<double>{0.3, -1.2, 2.0});
  const std::vector<double> r{1, -1, 1, -1};
  for (double nu : to_vec(g2rl::novelty(tensor_of(phi), vec(r)))) EXPECT_NEAR(nu, 0.0, 1e-6);
  // All ν equal, so min–max is degenerate: ν̄ = 0.5 and literal r̃ = r + λ/2.
  g2rl::ShapingOptions o;
  o.lambda = 0.4;
  expect_near_all(shape(phi, r, {0, 0, 0, 0}, o), {1.2, -0.8, 1.2, -0.8}, 1e-6);
  o.mode = "prose";  // f = 1 + λ(2·0.5 − 1) = 1: r̃ = r
  expect_near_all(shape(phi, r, {0, 0, 0, 0}, o), r, 1e-6);
}

TEST(G2rlNovelty, OrthogonalFeaturesGiveOne) {
  const Matrix phi{{2, 0, 0, 0}, {0, 0.5, 0, 0}, {0, 0, -3, 0}, {0, 0, 0, 1e-3}};
  const std::vector<double> r{1, -1, -1, 1};
  for (double nu : to_vec(g2rl::novelty(tensor_of(phi), vec(r)))) EXPECT_NEAR(nu, 1.0, 1e-9);
}

TEST(G2rlNovelty, AntiParallelPeersExplainLikeParallelOnes) {
  // S is squared: −v explains v as fully as v does.
  for (double nu : to_vec(g2rl::novelty(tensor_of({{1, 2, 3}, {-1, -2, -3}}), vec({1, -1}))))
    EXPECT_NEAR(nu, 0.0, 1e-6);
  for (double nu : to_vec(g2rl::novelty(tensor_of({{1, 2, 3}, {-2, -4, -6}, {0.5, 1, 1.5}}), vec({-1, 1, 1}))))
    EXPECT_NEAR(nu, 0.0, 1e-6);
  // A partly aligned peer: flipping its sign leaves ν unchanged.
  const auto a = to_vec(g2rl::novelty(tensor_of({{1, 0}, {1, 1}, {0, 1}}), vec({1, 1, -1})));
  const auto b = to_vec(g2rl::novelty(tensor_of({{1, 0}, {-1, -1}, {0, 1}}), vec({1, 1, -1})));
  expect_near_all(a, b, 1e-12);
  EXPECT_GT(a[0], 0.1);
}

TEST(G2rlNovelty, WeightsAreASoftmaxOverPeersThatSumsToOne) {
  const auto w = g2rl::novelty_weights(vec({1, -1, 1, 1, -1}));
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{5, 5}));
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(w[i][i].item<double>(), 0.0);
    EXPECT_NEAR(w[i].sum().item<double>(), 1.0, 1e-8);
  }
  // Row 0: peers 1..4 with exp(r) = e⁻¹, e, e, e⁻¹. A correct peer carries e² the weight of an incorrect one.
  const double z = 2 * std::exp(1.0) + 2 * std::exp(-1.0);
  EXPECT_NEAR(w[0][2].item<double>(), std::exp(1.0) / z, 1e-8);
  EXPECT_NEAR(w[0][1].item<double>(), std::exp(-1.0) / z, 1e-8);
  EXPECT_NEAR(w[0][2].item<double>() / w[0][1].item<double>(), std::exp(2.0), 1e-6);
  // Random rewards: rows still sum to one; a lone response has no peers (all-zero row) and ν = 1.
  const auto wr = g2rl::novelty_weights(torch::randn({7}, torch::kDouble));
  for (int64_t i = 0; i < 7; ++i) EXPECT_NEAR(wr[i].sum().item<double>(), 1.0, 1e-8);
  EXPECT_EQ(g2rl::novelty_weights(vec({1})).sum().item<double>(), 0.0);
  EXPECT_NEAR(g2rl::novelty(tensor_of({{1, 2}}), vec({1}))[0].item<double>(), 1.0, 1e-12);
}

TEST(G2rlNovelty, InvariantToRescalingFeatures) {
  torch::manual_seed(3);
  const auto phi = torch::randn({6, 5}, torch::kDouble);
  const auto r = vec({1, -1, -1, 1, 1, -1});
  // Exact with eps = 0; with the default eps the invariance holds up to eps/‖Φ‖ (here ‖Φ‖ ≥ ~1e-3).
  const auto base = to_vec(g2rl::novelty(phi, r, 0.0));
  for (double c : {1e-3, 7.0, 1e4}) {
    expect_near_all(to_vec(g2rl::novelty(phi * c, r, 0.0)), base, 1e-12);
    expect_near_all(to_vec(g2rl::novelty(phi * c, r)), base, c < 1 ? 1e-4 : 1e-7);
  }
  const auto per_row = torch::rand({6, 1}, torch::kDouble) * 10 + 0.1;  // cosines ignore each row's scale too
  expect_near_all(to_vec(g2rl::novelty(phi * per_row, r, 0.0)), base, 1e-12);
  // And it is not trivially constant: changing a direction changes ν.
  auto moved = phi.clone();
  moved[0] = phi[1];
  const auto other = to_vec(g2rl::novelty(moved, r, 0.0));
  EXPECT_GT(std::abs(other[0] - base[0]) + std::abs(other[1] - base[1]), 1e-3);
}

TEST(G2rlNovelty, HandComputedGroup) {
  expect_near_all(to_vec(g2rl::novelty(tensor_of(hand_features()), vec(hand_rewards()))), hand_nu(), 1e-7);
  // Any float dtype is accepted: bf16 features give ν of their rounded values.
  const auto bf = tensor_of(hand_features(), torch::kBFloat16);
  expect_near_all(to_vec(g2rl::novelty(bf, vec(hand_rewards()))),
                  to_vec(g2rl::novelty(bf.to(torch::kDouble), vec(hand_rewards()))), 1e-12);
}

// ---- Shaping (spec §8 item 3) -----------------------------------------------------------------------------------

TEST(G2rlShaping, LiteralModeIsRPlusLambdaNuBar) {
  g2rl::ShapingOptions o;  // literal, λ = 0.5, minmax
  const auto nb = hand_nu_bar();
  const auto got = shape(hand_features(), hand_rewards(), {5, 5, 5}, o);
  expect_near_all(got, {1 + 0.5 * nb[0], -1 + 0.5 * nb[1], 1 + 0.5 * nb[2]}, 1e-7);
  EXPECT_NEAR(got[1], -0.5, 1e-7);  // the most novel wrong answer is penalised least (eq. 12)
}

TEST(G2rlShaping, ProseModeScalesInOneMinusToOnePlusLambda) {
  g2rl::ShapingOptions o;
  o.mode = "prose";
  o.lambda = 0.5;
  const auto nb = hand_nu_bar();
  const auto got = shape(hand_features(), hand_rewards(), {0, 0, 0}, o);
  // f = 1 + λ(2ν̄ − 1): correct 0 (ν̄ = 0.2384…) and 2 (ν̄ = 0) are damped; wrong 1 (ν̄ = 1) is amplified.
  expect_near_all(got, {1 + 0.5 * (2 * nb[0] - 1), -1.5, 0.5}, 1e-7);
  EXPECT_LT(got[1], -1.0);  // a novel wrong answer: r̃ < −1, as the prose says
  // Random groups: f = r̃ / r stays in [1 − λ, 1 + λ] and signs survive for λ < 1.
  torch::manual_seed(11);
  o.lambda = 0.8;
  const auto phi = torch::randn({32, 6});
  const auto r = g2rl::to_pm1(torch::randint(0, 2, {32}));
  const auto gid = torch::arange(32, torch::kLong).div(8, "floor");
  const auto f = g2rl::shape_rewards(phi, r, gid, o) / r;
  EXPECT_GE(f.min().item<double>(), 1 - 0.8 - 1e-6);
  EXPECT_LE(f.max().item<double>(), 1 + 0.8 + 1e-6);
  EXPECT_NEAR(f.min().item<double>(), 0.2, 1e-6);  // min–max puts ν̄ = 0 and 1 in every non-degenerate group
  EXPECT_NEAR(f.max().item<double>(), 1.8, 1e-6);
}

TEST(G2rlShaping, ClipBindsAtThreeForLargeLambda) {
  g2rl::ShapingOptions o;
  o.lambda = 5.0;
  std::map<std::string, double> m;
  const auto nb = hand_nu_bar();
  // literal: −1 + 5·1 = 4 → 3; the others stay inside.
  expect_near_all(shape(hand_features(), hand_rewards(), {0, 0, 0}, o, &m), {1 + 5 * nb[0], 3.0, 1.0}, 1e-6);
  EXPECT_NEAR(m["g2rl/clip_frac"], 1.0 / 3, 1e-12);
  o.clip = 10;  // a looser clip leaves 4
  EXPECT_NEAR(shape(hand_features(), hand_rewards(), {0, 0, 0}, o)[1], 4.0, 1e-6);
  // prose: wrong 1 gets −1·(1 + 5) = −6 → −3; correct 2 gets 1·(1 − 5) = −4 → −3.
  o.clip = 3;
  o.mode = "prose";
  const auto p = shape(hand_features(), hand_rewards(), {0, 0, 0}, o);
  EXPECT_NEAR(p[1], -3.0, 1e-6);
  EXPECT_NEAR(p[2], -3.0, 1e-6);
  EXPECT_NEAR(p[0], 1 + 5 * (2 * nb[0] - 1), 1e-6);
}

TEST(G2rlShaping, NuNormNoneUsesRawNovelty) {
  g2rl::ShapingOptions o;
  o.nu_norm = "none";
  o.lambda = 0.5;
  const auto nu = hand_nu();
  expect_near_all(shape(hand_features(), hand_rewards(), {0, 0, 0}, o),
                  {1 + 0.5 * nu[0], -1 + 0.5 * nu[1], 1 + 0.5 * nu[2]}, 1e-7);
  // Orthogonal features: every ν = 1, so none gives r + λ while minmax hits the degenerate 0.5 rule.
  const Matrix orth{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  expect_near_all(shape(orth, {1, -1, 1}, {0, 0, 0}, o), {1.5, -0.5, 1.5}, 1e-7);
  o.nu_norm = "minmax";
  expect_near_all(shape(orth, {1, -1, 1}, {0, 0, 0}, o), {1.25, -0.75, 1.25}, 1e-7);
}

TEST(G2rlShaping, ZeroVarianceGroupsShapeOrSkip) {
  // Group 1: the hand group (mixed). Group 2: all correct, varied directions. Group 3: all wrong, identical Φ.
  Matrix phi = hand_features();
  for (const auto& row : Matrix{{1, 0}, {1, 1}, {0, 1}, {3, -1}}) phi.push_back(row);
  for (int i = 0; i < 2; ++i) phi.push_back({0.2, 0.4});
  const std::vector<double> r{1, -1, 1, 1, 1, 1, 1, -1, -1};
  const std::vector<int64_t> gid{1, 1, 1, 2, 2, 2, 2, 3, 3};
  g2rl::ShapingOptions o;
  std::map<std::string, double> shaped_m, skipped_m;
  const auto shaped = shape(phi, r, gid, o, &shaped_m);
  o.zero_var_groups = "skip";
  const auto skipped = shape(phi, r, gid, o, &skipped_m);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(shaped[i], skipped[i], 1e-12) << "a mixed group is shaped either way";
  double lo = 1e9, hi = -1e9;
  for (int i = 3; i < 7; ++i) {
    EXPECT_EQ(skipped[i], 1.0);
    lo = std::min(lo, shaped[i]);
    hi = std::max(hi, shaped[i]);
  }
  EXPECT_NEAR(lo, 1.0, 1e-7);  // min–max: ν̄ spans [0, 1] so r̃ spans [1, 1 + λ]
  EXPECT_NEAR(hi, 1.5, 1e-7);
  EXPECT_NEAR(shaped[7], -0.75, 1e-7);  // degenerate ν̄ = 0.5: shaped, yet all equal
  EXPECT_EQ(skipped[7], -1.0);
  EXPECT_NEAR(shaped_m["g2rl/zero_var_group_frac"], 2.0 / 3, 1e-12);
  EXPECT_NEAR(shaped_m["g2rl/zero_var_shaped_frac"], 0.5, 1e-12);  // group 2 varies, group 3 does not
  EXPECT_NEAR(skipped_m["g2rl/zero_var_group_frac"], 2.0 / 3, 1e-12);
  EXPECT_EQ(skipped_m["g2rl/zero_var_shaped_frac"], 0.0);
}

TEST(G2rlShaping, RejectsBadRewardsAndOptions) {
  g2rl::ShapingOptions o;
  EXPECT_THROW(shape(hand_features(), {1, 0, 1}, {0, 0, 0}, o), std::invalid_argument);  // {0,1}: map first
  expect_near_all(to_vec(g2rl::to_pm1(vec({0, 1, 1, 0}))), {-1, 1, 1, -1}, 0);
  expect_near_all(to_vec(g2rl::to_pm1(vec({-1, 1}))), {-1, 1}, 0);
  for (auto bad : {&g2rl::ShapingOptions::mode, &g2rl::ShapingOptions::nu_norm,
                   &g2rl::ShapingOptions::zero_var_groups}) {
    auto b = o;
    b.*bad = "nope";
    EXPECT_THROW(shape(hand_features(), hand_rewards(), {0, 0, 0}, b), std::invalid_argument);
  }
  auto neg = o;
  neg.lambda = -0.1;
  EXPECT_THROW(g2rl::validate(neg), std::invalid_argument);
  EXPECT_THROW(g2rl::shape_rewards(torch::randn({3, 2}), vec({1, 1}), ids({0, 0, 0}), o), std::invalid_argument);
}

// ---- The loop reference on random batches ---------------------------------------------------------------------

TEST(G2rlReference, RandomBatchesMatchTheLoopImplementation) {
  std::mt19937 rng(20251217);
  std::normal_distribution<double> normal;
  std::bernoulli_distribution coin(0.5);
  const std::vector<int> sizes{16, 8, 1, 2, 5, 16, 3, 16};
  for (int trial = 0; trial < 4; ++trial) {
    const int d = trial % 2 ? 3 : 24;  // d = 3 gives many negative and near-parallel cosines
    Matrix phi;
    std::vector<double> r;
    std::vector<int64_t> gid;
    std::map<int64_t, std::vector<size_t>> members;
    for (size_t g = 0; g < sizes.size(); ++g) {
      const bool constant = g == 1 || g == 5;  // zero-variance groups
      const bool sign = coin(rng);
      for (int k = 0; k < sizes[g]; ++k) {
        std::vector<double> row(d);
        for (auto& x : row) x = normal(rng) * (1 + 3 * trial);
        phi.push_back(row);
        r.push_back(constant ? (sign ? 1 : -1) : (coin(rng) ? 1 : -1));
        gid.push_back(static_cast<int64_t>(100 - 7 * g));
      }
    }
    // Interleave the groups: ids need not be contiguous.
    std::vector<size_t> perm(r.size());
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    Matrix phi_p;
    std::vector<double> r_p;
    std::vector<int64_t> gid_p;
    for (size_t i : perm) {
      phi_p.push_back(phi[i]);
      r_p.push_back(r[i]);
      gid_p.push_back(gid[i]);
    }
    for (size_t i = 0; i < gid_p.size(); ++i) members[gid_p[i]].push_back(i);

    for (const char* mode : {"literal", "prose"})
      for (const char* norm : {"minmax", "none"})
        for (const char* zero : {"shape", "skip"})
          for (double lambda : {0.25, 1.0, 3.0}) {
            g2rl::ShapingOptions o;
            o.mode = mode;
            o.nu_norm = norm;
            o.zero_var_groups = zero;
            o.lambda = lambda;
            std::vector<double> want_nu(r_p.size()), want(r_p.size());
            for (const auto& [g, idx] : members) {
              Matrix gphi;
              std::vector<double> gr;
              for (size_t i : idx) {
                gphi.push_back(phi_p[i]);
                gr.push_back(r_p[i]);
              }
              const auto nu = ref_novelty(gphi, gr, o.eps);
              const auto shaped = ref_shape_group(gphi, gr, o);
              for (size_t k = 0; k < idx.size(); ++k) {
                want_nu[idx[k]] = nu[k];
                want[idx[k]] = shaped[k];
              }
            }
            const auto features = tensor_of(phi_p, torch::kDouble);
            expect_near_all(to_vec(g2rl::batch_novelty(features, ids(gid_p), vec(r_p))), want_nu, 1e-6);
            const auto got = to_vec(g2rl::shape_rewards(features, vec(r_p), ids(gid_p), o));
            expect_near_all(got, want, 1e-6);
            if (std::string(mode) == "literal" && std::string(zero) == "shape" && lambda < 1) {
              // With binary r and no clipping, eq. 12–13 reduce to r̃ = r + λν̄.
              for (size_t i = 0; i < got.size(); ++i) EXPECT_GE(got[i] - r_p[i], -1e-6);
            }
          }
  }
}

// ---- Metrics and the §7 geometry (spec §8 item 4, issue G items 4–5) -------------------------------------------

namespace {
// Group 7: a = e1, b = 2·e1 (cos 1, both correct), c = −3·e1 (wrong; cos −1 with a and b).
// Group 3: d = (−1, 1, 0), e = (−1, 0, 0), both wrong, cos = 1/√2.
// Cross-group cosines (a·d = −1/√2, a·e = −1) must not enter the pair statistics.
Matrix metric_features() { return {{1, 0, 0}, {2, 0, 0}, {-3, 0, 0}, {-1, 1, 0}, {-1, 0, 0}}; }
std::vector<double> metric_rewards() { return {1, 1, -1, -1, -1}; }
std::vector<int64_t> metric_groups() { return {7, 7, 7, 3, 3}; }
}  // namespace

TEST(G2rlMetrics, HandBuiltBatch) {
  g2rl::ShapingOptions o;
  std::map<std::string, double> m;
  m["other/key"] = 42;
  shape(metric_features(), metric_rewards(), metric_groups(), o, &m);
  EXPECT_EQ(m["other/key"], 42);  // adds, never clears
  // ν: group 7 is all (anti)parallel → 0; group 3 → 1 − cos² = 0.5 each.
  EXPECT_NEAR(m["g2rl/nu_mean"], 1.0 / 5, 1e-6);
  EXPECT_NEAR(m["g2rl/nu_mean_correct"], 0.0, 1e-6);
  EXPECT_NEAR(m["g2rl/nu_std_correct"], 0.0, 1e-6);
  EXPECT_NEAR(m["g2rl/nu_mean_incorrect"], 1.0 / 3, 1e-6);
  EXPECT_NEAR(m["g2rl/nu_std_incorrect"], std::sqrt(1.0 / 18), 1e-6);  // population std of {0, ½, ½}
  // ‖Φ‖ = 1, 2, 3, √2, 1.
  EXPECT_NEAR(m["g2rl/phi_norm_mean"], (7 + std::sqrt(2.0)) / 5, 1e-9);
  EXPECT_NEAR(m["g2rl/phi_norm_min"], 1.0, 1e-12);
  EXPECT_NEAR(m["g2rl/phi_norm_max"], 3.0, 1e-12);
  EXPECT_NEAR(m["g2rl/phi_norm_p50"], std::sqrt(2.0), 1e-9);
  // Within-group pairs: ab = 1 (cc), ac = bc = −1 (mixed), de = 1/√2 (ii).
  EXPECT_NEAR(m["g2rl/cos_mean"], (1 - 2 + M_SQRT1_2) / 4, 1e-6);
  EXPECT_NEAR(m["g2rl/cos_neg_frac"], 0.5, 1e-12);
  EXPECT_NEAR(m["g2rl/cos_mean_cc"], 1.0, 1e-6);
  EXPECT_EQ(m["g2rl/cos_neg_frac_cc"], 0.0);
  EXPECT_NEAR(m["g2rl/cos_mean_mixed"], -1.0, 1e-6);
  EXPECT_EQ(m["g2rl/cos_neg_frac_mixed"], 1.0);
  EXPECT_NEAR(m["g2rl/cos_mean_ii"], M_SQRT1_2, 1e-6);
  EXPECT_EQ(m["g2rl/cos_neg_frac_ii"], 0.0);
  // Group 3 is zero-variance with equal ν (degenerate ν̄ = 0.5): shaped, but all equal.
  EXPECT_NEAR(m["g2rl/zero_var_group_frac"], 0.5, 1e-12);
  EXPECT_EQ(m["g2rl/zero_var_shaped_frac"], 0.0);
  EXPECT_EQ(m["g2rl/clip_frac"], 0.0);
  // r̃: group 7 has equal ν → 0.5 → 1.25, 1.25, −0.75; group 3 → −0.75, −0.75.
  EXPECT_NEAR(m["g2rl/shaped_reward_mean"], (2.5 - 0.75 * 3) / 5, 1e-6);

  // No correct response and no mixed pair: those statistics are NaN (logged as null).
  std::map<std::string, double> wrong;
  shape({{1, 0}, {0, 1}}, {-1, -1}, {0, 0}, o, &wrong);
  EXPECT_TRUE(std::isnan(wrong["g2rl/nu_mean_correct"]));
  EXPECT_TRUE(std::isnan(wrong["g2rl/cos_mean_mixed"]));
  EXPECT_NEAR(wrong["g2rl/cos_mean_ii"], 0.0, 1e-12);
  EXPECT_EQ(wrong["g2rl/zero_var_shaped_frac"], 0.0);
}

TEST(G2rlGeometry, PairsStayWithinProblems) {
  const auto features = tensor_of(metric_features());
  for (const auto& correct : {torch::tensor({true, true, false, false, false}), vec({1, 1, 0, 0, 0}),
                              vec(metric_rewards())}) {
    const auto s = g2rl::geometry(features, ids(metric_groups()), correct);
    EXPECT_EQ(s.all.pairs, 4);  // 3 + 1 within-group pairs, not C(5, 2) = 10
    EXPECT_EQ(s.correct_correct.pairs, 1);
    EXPECT_EQ(s.mixed.pairs, 2);
    EXPECT_EQ(s.incorrect_incorrect.pairs, 1);
    EXPECT_NEAR(s.all.mean_cos, (1 - 2 + M_SQRT1_2) / 4, 1e-6);
    EXPECT_EQ(s.all.neg_frac, 0.5);
    EXPECT_NEAR(s.mixed.mean_cos, -1.0, 1e-6);
    EXPECT_EQ(s.mixed.neg_frac, 1.0);
    EXPECT_NEAR(s.correct_correct.mean_cos, 1.0, 1e-6);
    EXPECT_NEAR(s.incorrect_incorrect.mean_cos, M_SQRT1_2, 1e-6);
    expect_near_all(to_vec(s.first), {0, 0, 1, 3}, 0);
    expect_near_all(to_vec(s.second), {1, 2, 2, 4}, 0);
    expect_near_all(to_vec(s.kind), {2, 1, 1, 0}, 0);
    expect_near_all(to_vec(s.cosines), {1, -1, -1, M_SQRT1_2}, 1e-6);
    EXPECT_EQ(g2rl::cosine_histogram(s.cosines, 4), (std::vector<int64_t>{2, 0, 0, 2}));
  }
  EXPECT_EQ(g2rl::cosine_histogram(vec({-1.0, -0.99, 0.0, 0.05, 0.99, 1.0, 2.0}), 2),
            (std::vector<int64_t>{2, 5}));
  // The paper's protocol: 30 problems × 8 responses → 30 · C(8, 2) = 840 pairs.
  const auto s = g2rl::geometry(torch::randn({240, 16}), torch::arange(240, torch::kLong).div(8, "floor"),
                                torch::randint(0, 2, {240}));
  EXPECT_EQ(s.all.pairs, 840);
  EXPECT_EQ(s.cosines.size(0), 840);
  EXPECT_EQ(s.correct_correct.pairs + s.mixed.pairs + s.incorrect_incorrect.pairs, 840);
}
