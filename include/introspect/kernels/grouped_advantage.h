// GRPO's group-normalised advantage in one launch, and its CPU twin. Plain pointers and a stream: no torch
// header reaches nvcc. Same options and arithmetic as algo::grpo_advantages (fp64 statistics, fp32 output).
#pragma once

#include <cstdint>

namespace introspect::kernels {

struct GroupAdvantageOptions {
  bool norm_by_std = true;           // false: Dr.GRPO's r - mean
  bool unbiased_std = true;          // N-1 or N in the variance
  double epsilon = 1e-6;
  bool epsilon_inside_sqrt = false;  // (r - mean) / sqrt(var + eps) instead of (r - mean) / (std + eps)
};

// scores [N] fp32 with each group's samples contiguous; offsets [groups + 1] int64, offsets[0] = 0 and
// offsets[groups] = N. A group of one gets mean 0 and variance 1, as in the CPU function. Device pointers.
void grouped_advantage(const float* scores, const int64_t* offsets, int64_t groups, float* advantages,
                       const GroupAdvantageOptions& options, void* stream);
// The CPU twin, on host pointers.
void grouped_advantage_reference(const float* scores, const int64_t* offsets, int64_t groups, float* advantages,
                                 const GroupAdvantageOptions& options);

}  // namespace introspect::kernels
