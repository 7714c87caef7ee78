// Evaluation estimators over n samples per problem (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace introspect::reward {

// Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for c correct of n samples, computed as a
// product so it stays exact for large n. Requires 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

// maj@k: majority vote over the first k samples' normalised answers (empty = no answer, never voted for);
// ties are broken by a draw seeded with `seed`. Returns whether the winning answer is correct (false when no
// sample has an answer). correct[i] says whether answers[i] is right.
bool majority_correct(const std::vector<std::string>& answers, const std::vector<bool>& correct, int64_t k,
                      uint64_t seed);

}  // namespace introspect::reward
