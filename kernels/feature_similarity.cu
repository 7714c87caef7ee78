// One block per group (grid-stride over groups). Warps take the group's rows for the norms, then the pairs
// i <= j for the dot products (fp64 accumulation over the feature width, lanes striding so reads coalesce),
// then one thread per row forms ν from the Gram it just wrote. m ≤ kMaxSimilarityGroup.
#include "cuda_check.h"
#include "introspect/kernels/feature_similarity.h"

namespace introspect::kernels {
namespace {

__device__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

__device__ double warp_dot(const float* __restrict__ a, const float* __restrict__ b, int64_t dim, int lane) {
  double acc = 0;
  for (int64_t k = lane; k < dim; k += 32) acc += static_cast<double>(a[k]) * b[k];
  return warp_sum(acc);
}

__global__ void feature_similarity_kernel(const float* __restrict__ features, const int64_t* __restrict__ offsets,
                                          const int64_t* __restrict__ gram_offsets, int64_t groups, int64_t dim,
                                          const float* __restrict__ rewards, double eps, float* __restrict__ gram,
                                          float* __restrict__ nu) {
  extern __shared__ double shared[];  // norm[m], exp_r[m]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t lo = offsets[g], m = offsets[g + 1] - lo;
    double* norm = shared;
    double* exp_r = shared + m;
    float* s = gram + gram_offsets[g];
    for (int64_t i = warp; i < m; i += warps) {
      const float* row = features + (lo + i) * dim;
      const double sq = warp_dot(row, row, dim, lane);
      if (lane == 0) norm[i] = sqrt(sq) + eps, exp_r[i] = exp(static_cast<double>(rewards[lo + i]));
    }
    __syncthreads();
    for (int64_t p = warp; p < m * m; p += warps) {
      const int64_t i = p / m, j = p % m;
      if (j < i) continue;
      const double dot = warp_dot(features + (lo + i) * dim, features + (lo + j) * dim, dim, lane);
      if (lane == 0) {
        const float c = static_cast<float>(dot / (norm[i] * norm[j]));
        s[i * m + j] = c;
        s[j * m + i] = c;
      }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      double e_total = 0, weighted = 0;
      for (int64_t j = 0; j < m; ++j) {
        e_total += exp_r[j];
        // ν from the fp64 Gram would need a second m×m buffer; recompute S from the stored fp32 value instead
        // (the fp32 rounding of S is ~6e-8, far inside the tolerance of anything that reads ν).
        const double c = s[i * m + j];
        if (j != i) weighted += exp_r[j] * c * c;
      }
      nu[lo + i] = static_cast<float>(fmax(1.0 - weighted / (e_total - exp_r[i] + eps), 0.0));
    }
    __syncthreads();
  }
}

}  // namespace

void feature_similarity(const float* features, const int64_t* offsets, const int64_t* gram_offsets, int64_t groups,
                        int64_t dim, const float* rewards, double eps, float* gram, float* nu, void* stream) {
  if (groups <= 0) return;
  constexpr int kThreads = 256;
  const size_t shared_bytes = 2 * kMaxSimilarityGroup * sizeof(double);
  const int blocks = static_cast<int>(std::min<int64_t>(groups, 65535));
  feature_similarity_kernel<<<blocks, kThreads, shared_bytes, static_cast<cudaStream_t>(stream)>>>(
      features, offsets, gram_offsets, groups, dim, rewards, eps, gram, nu);
  check_launch("feature_similarity_kernel");
}

}  // namespace introspect::kernels
