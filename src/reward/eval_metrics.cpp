#include "introspect/reward/eval_metrics.h"

#include <map>
#include <random>
#include <stdexcept>

namespace introspect::reward {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (n < 1 || c < 0 || c > n || k < 1 || k > n) {
    throw std::invalid_argument("pass_at_k: need 0 <= c <= n and 1 <= k <= n (n=" + std::to_string(n) +
                                ", c=" + std::to_string(c) + ", k=" + std::to_string(k) + ")");
  }
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
  double miss = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) miss *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - miss;
}

bool majority_correct(const std::vector<std::string>& answers, const std::vector<bool>& correct, int64_t k,
                      uint64_t seed) {
  if (answers.size() != correct.size() || k < 1 || k > static_cast<int64_t>(answers.size())) {
    throw std::invalid_argument("majority_correct: answers and correct must match and 1 <= k <= n");
  }
  std::map<std::string, std::pair<int64_t, bool>> votes;  // answer -> (count, correct)
  for (int64_t i = 0; i < k; ++i) {
    if (answers[i].empty()) continue;
    auto& v = votes[answers[i]];
    ++v.first;
    v.second = correct[i];
  }
  if (votes.empty()) return false;
  int64_t best = 0;
  for (const auto& [answer, v] : votes) best = std::max(best, v.first);
  std::vector<bool> tied;
  for (const auto& [answer, v] : votes)
    if (v.first == best) tied.push_back(v.second);
  std::mt19937_64 rng(seed);
  return tied[rng() % tied.size()];
}

}  // namespace introspect::reward
