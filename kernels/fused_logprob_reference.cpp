// CPU twins of the row kernels in fused_logprob.cu, one row at a time in the plainest form.
#include <cmath>
#include <limits>

#include "introspect/kernels/fused_logprob.h"

namespace introspect::kernels {

void logits_row_stats_reference(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* lse,
                                float* logp, float* entropy) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * vocab;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < vocab; ++v) m = std::max(m, double(z[v]));
    double s = 0, t = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double e = std::exp(z[v] - m);
      s += e;
      t += e * z[v];
    }
    const double l = m + std::log(s);
    lse[r] = static_cast<float>(l);
    logp[r] = static_cast<float>(z[targets[r]] - l);
    entropy[r] = static_cast<float>(l - t / s);
  }
}

void softmax_column_sums_reference(const float* logits, const float* lse, const int64_t* segment, int64_t rows,
                                   int64_t vocab, float* prob_sum) {
  for (int64_t r = 0; r < rows; ++r) {
    if (segment[r] < 0) continue;
    for (int64_t v = 0; v < vocab; ++v) prob_sum[segment[r] * vocab + v] += std::exp(logits[r * vocab + v] - lse[r]);
  }
}

void logits_backward_reference(float* logits, const float* lse, const float* entropy, const int64_t* targets,
                               const float* grad_logp, const float* grad_entropy, int64_t rows, int64_t vocab,
                               float inv_temperature) {
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * vocab;
    for (int64_t v = 0; v < vocab; ++v) {
      const double logp = double(z[v]) - lse[r], p = std::exp(logp);
      double d = grad_logp[r] * ((v == targets[r] ? 1.0 : 0.0) - p);
      if (grad_entropy) d -= grad_entropy[r] * p * (logp + entropy[r]);
      z[v] = static_cast<float>(d * inv_temperature);
    }
  }
}

}  // namespace introspect::kernels
