// CPU twin of feature_similarity.cu: per group, the fp64 cosine Gram and ν.
#include <algorithm>
#include <cmath>
#include <vector>

#include "introspect/kernels/feature_similarity.h"

namespace introspect::kernels {

void feature_similarity_reference(const float* features, const int64_t* offsets, const int64_t* gram_offsets,
                                  int64_t groups, int64_t dim, const float* rewards, double eps, float* gram,
                                  float* nu) {
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t lo = offsets[g], m = offsets[g + 1] - offsets[g];
    std::vector<double> norm(m), s(m * m), e(m);
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < dim; ++k) acc += double(features[(lo + i) * dim + k]) * features[(lo + i) * dim + k];
      norm[i] = std::sqrt(acc) + eps;
      e[i] = std::exp(double(rewards[lo + i]));
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < dim; ++k) acc += double(features[(lo + i) * dim + k]) * features[(lo + j) * dim + k];
        s[i * m + j] = acc / (norm[i] * norm[j]);
        gram[gram_offsets[g] + i * m + j] = static_cast<float>(s[i * m + j]);
      }
    double e_total = 0;
    for (int64_t i = 0; i < m; ++i) e_total += e[i];
    for (int64_t i = 0; i < m; ++i) {
      double weighted = 0;
      for (int64_t j = 0; j < m; ++j)
        if (j != i) weighted += e[j] * s[i * m + j] * s[i * m + j];
      nu[lo + i] = static_cast<float>(std::max(1.0 - weighted / (e_total - e[i] + eps), 0.0));
    }
  }
}

}  // namespace introspect::kernels
