// The CUDA path: skipped where there is no GPU, a real kernel-vs-CPU-twin check where there is one.
#include <gtest/gtest.h>

#include <vector>

#include "introspect/kernels/smoke.h"
#ifdef INTROSPECT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace k = introspect::kernels;

TEST(CudaSmoke, SaxpyMatchesItsCpuTwin) {
  std::string why;
  if (k::cuda_device_count(&why) == 0) GTEST_SKIP() << "no usable GPU: " << why;
#ifdef INTROSPECT_HAVE_CUDA
  const int64_t n = 1 << 20;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 97) * 0.5f;
    y[i] = static_cast<float>(i % 13) - 6.0f;
  }
  std::vector<float> expect = y;
  k::saxpy_reference(n, 1.5f, x.data(), expect.data());
  float *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  k::saxpy(n, 1.5f, dx, dy, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> got(n);
  ASSERT_EQ(cudaMemcpy(got.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
  for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(got[i], expect[i]) << "at " << i;
#endif
}

TEST(CudaSmoke, CpuTwinComputesSaxpy) {
  std::vector<float> x{1, 2, 3}, y{10, 20, 30};
  k::saxpy_reference(3, 2.0f, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{12, 24, 36}));
}
