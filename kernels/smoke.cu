#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "introspect/kernels/smoke.h"

namespace introspect::kernels {
namespace {

__global__ void saxpy_kernel(int64_t n, float a, const float* __restrict__ x, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = a * x[i] + y[i];
  }
}

}  // namespace

bool built_with_cuda() { return true; }

int cuda_device_count(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = cudaGetErrorString(err);
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA device";
  return count;
}

void saxpy(int64_t n, float a, const float* x, float* y, void* stream) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
  saxpy_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(n, a, x, y);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("saxpy launch failed: ") + cudaGetErrorString(err));
}

}  // namespace introspect::kernels
