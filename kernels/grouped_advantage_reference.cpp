// CPU twin of grouped_advantage.cu: the same fp64 statistics, group by group.
#include <cmath>

#include "introspect/kernels/grouped_advantage.h"

namespace introspect::kernels {

void grouped_advantage_reference(const float* scores, const int64_t* offsets, int64_t groups, float* advantages,
                                 const GroupAdvantageOptions& o) {
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t lo = offsets[g], n = offsets[g + 1] - offsets[g];
    if (n <= 0) continue;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += scores[lo + i];
    double mean = sum / static_cast<double>(n), sq = 0;
    for (int64_t i = 0; i < n; ++i) sq += (scores[lo + i] - mean) * (scores[lo + i] - mean);
    double var = sq / static_cast<double>(o.unbiased_std ? std::max<int64_t>(n - 1, 1) : n);
    if (n == 1) mean = 0, var = 1;
    const double denom = !o.norm_by_std          ? 1.0
                         : o.epsilon_inside_sqrt ? std::sqrt(var + o.epsilon)
                                                 : std::sqrt(var) + o.epsilon;
    for (int64_t i = 0; i < n; ++i) advantages[lo + i] = static_cast<float>((scores[lo + i] - mean) / denom);
  }
}

}  // namespace introspect::kernels
