// pass@k against the closed form 1 - C(n-c,k)/C(n,k) with exact binomials, and maj@k against a brute-force count.
#include <gtest/gtest.h>

#include <random>

#include "introspect/reward/eval_metrics.h"

using introspect::reward::majority_correct;
using introspect::reward::pass_at_k;

namespace {
// Exact binomial in long double via the multiplicative formula (small n only).
long double binomial(int64_t n, int64_t k) {
  if (k < 0 || k > n) return 0;
  long double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * (n - k + i) / i;
  return r;
}
}  // namespace

TEST(PassAtK, MatchesTheClosedFormOnRandomCases) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 60);
    const int64_t c = static_cast<int64_t>(rng() % (n + 1));
    const int64_t k = 1 + static_cast<int64_t>(rng() % n);
    const long double closed = 1.0L - binomial(n - c, k) / binomial(n, k);
    EXPECT_NEAR(pass_at_k(n, c, k), static_cast<double>(closed), 1e-12) << n << " " << c << " " << k;
  }
  EXPECT_DOUBLE_EQ(pass_at_k(10, 3, 1), 0.3);  // pass@1 is the mean accuracy
  EXPECT_DOUBLE_EQ(pass_at_k(10, 0, 5), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 6, 5), 1.0);  // fewer than k wrong samples
  EXPECT_THROW(pass_at_k(5, 6, 1), std::invalid_argument);
  EXPECT_THROW(pass_at_k(5, 1, 6), std::invalid_argument);
}

TEST(MajorityAtK, MatchesABruteForceCount) {
  std::mt19937_64 rng(2);
  const std::vector<std::string> pool{"", "1", "2", "3", "1/2"};
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 12);
    std::vector<std::string> answers(n);
    std::vector<bool> correct(n);
    for (int64_t i = 0; i < n; ++i) {
      answers[i] = pool[rng() % pool.size()];
      correct[i] = answers[i] == "2";
    }
    const int64_t k = 1 + static_cast<int64_t>(rng() % n);
    // Brute force: count each candidate over the first k, find the maximum and who holds it.
    int64_t best = 0, right_count = 0;
    for (const auto& cand : pool) {
      if (cand.empty()) continue;
      int64_t count = 0;
      for (int64_t i = 0; i < k; ++i) count += answers[i] == cand;
      best = std::max(best, count);
    }
    int64_t holders = 0;
    for (const auto& cand : pool) {
      if (cand.empty()) continue;
      int64_t count = 0;
      for (int64_t i = 0; i < k; ++i) count += answers[i] == cand;
      if (count == best && best > 0) {
        ++holders;
        right_count += cand == "2";
      }
    }
    const bool got = majority_correct(answers, correct, k, 7);
    if (best == 0) {
      EXPECT_FALSE(got);
    } else if (holders == 1) {
      EXPECT_EQ(got, right_count == 1);
    } else if (right_count == 0) {
      EXPECT_FALSE(got);  // a tie among wrong answers stays wrong
    }
    EXPECT_EQ(got, majority_correct(answers, correct, k, 7)) << "ties are broken deterministically by the seed";
  }
}

TEST(MajorityAtK, TiesAreBrokenBySeedFairly) {
  // "2" (right) and "3" (wrong) tie: across seeds both must win sometimes.
  int right = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) right += majority_correct({"2", "3"}, {true, false}, 2, seed);
  EXPECT_GT(right, 60);
  EXPECT_LT(right, 140);
}
