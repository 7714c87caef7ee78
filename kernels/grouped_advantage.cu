// One warp per group: the lanes stride over the group's scores for the fp64 mean, then the squared deviations,
// and write the advantages. Groups in GRPO are small (n = 4..64), so a warp keeps every lane busy without
// block-wide synchronisation; a grid-stride loop covers any number of groups in one launch.
#include "cuda_check.h"
#include "introspect/kernels/grouped_advantage.h"

namespace introspect::kernels {
namespace {

__device__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

__global__ void grouped_advantage_kernel(const float* __restrict__ scores, const int64_t* __restrict__ offsets,
                                         int64_t groups, float* __restrict__ advantages, GroupAdvantageOptions o) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t g = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; g < groups; g += warps) {
    const int64_t lo = offsets[g], n = offsets[g + 1] - lo;
    if (n <= 0) continue;
    double sum = 0;
    for (int64_t i = lane; i < n; i += 32) sum += scores[lo + i];
    double mean = warp_sum(sum) / static_cast<double>(n);
    double sq = 0;
    for (int64_t i = lane; i < n; i += 32) sq += (scores[lo + i] - mean) * (scores[lo + i] - mean);
    double var = warp_sum(sq) / static_cast<double>(o.unbiased_std ? max(n - 1, int64_t{1}) : n);
    if (n == 1) mean = 0, var = 1;
    const double denom = !o.norm_by_std ? 1.0 : o.epsilon_inside_sqrt ? sqrt(var + o.epsilon) : sqrt(var) + o.epsilon;
    for (int64_t i = lane; i < n; i += 32) advantages[lo + i] = static_cast<float>((scores[lo + i] - mean) / denom);
  }
}

}  // namespace

void grouped_advantage(const float* scores, const int64_t* offsets, int64_t groups, float* advantages,
                       const GroupAdvantageOptions& options, void* stream) {
  if (groups <= 0) return;
  constexpr int kThreads = 256, kWarpsPerBlock = kThreads / 32;
  const int blocks = static_cast<int>(std::min<int64_t>((groups + kWarpsPerBlock - 1) / kWarpsPerBlock, 65535));
  grouped_advantage_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(scores, offsets, groups,
                                                                                       advantages, options);
  check_launch("grouped_advantage_kernel");
}

}  // namespace introspect::kernels
