// The NCCL engine on device buffers: the same collectives as the MPI engine, checked against host arithmetic.
// Skipped without a usable GPU; run under mpirun with one GPU per rank for world sizes above 1.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "introspect/dist/communicator.h"
#include "introspect/dist/nccl.h"

namespace dist = introspect::dist;

namespace {

struct Device {
  std::unique_ptr<dist::Communicator> host, nccl;
  std::string why;
  Device() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      why = "no usable CUDA device";
      return;
    }
    host = dist::from_environment(120);
    nccl = dist::make_nccl(*host, nullptr, 120);
  }
};

Device& device() {
  static Device d;
  return d;
}

template <class T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

template <class T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

}  // namespace

TEST(Nccl, CollectivesOnDeviceBuffers) {
  if (!device().nccl) GTEST_SKIP() << device().why;
  auto& c = *device().nccl;
  EXPECT_EQ(c.backend(), "nccl");
  const int r = c.rank(), w = c.world_size();

  std::vector<float> x(1 << 20);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) * (r + 1);
  float* d = to_device(x);
  c.all_reduce(d, x.size(), dist::DType::kFloat32, dist::ReduceOp::kSum);
  const auto summed = to_host(d, x.size());
  const float ranks = w * (w + 1) / 2.0f;
  for (size_t i = 0; i < x.size(); i += 4099) ASSERT_FLOAT_EQ(summed[i], static_cast<float>(i % 97) * ranks);

  std::vector<double> blocks(4 * w);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<double>(i) + r;
  double* send = to_device(blocks);
  double* recv = to_device(std::vector<double>(4));
  c.reduce_scatter(send, recv, 4, dist::DType::kFloat64, dist::ReduceOp::kMax);
  const auto mine = to_host(recv, 4);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(mine[i], static_cast<double>(r * 4 + i) + (w - 1));

  int64_t* one = to_device(std::vector<int64_t>{100 + r});
  int64_t* all = to_device(std::vector<int64_t>(w));
  c.all_gather(one, all, 1, dist::DType::kInt64);
  const auto gathered = to_host(all, w);
  for (int k = 0; k < w; ++k) EXPECT_EQ(gathered[k], 100 + k);

  uint8_t* b = to_device(std::vector<uint8_t>(3, static_cast<uint8_t>(r + 7)));
  c.broadcast(b, 3, dist::DType::kUInt8, 0);
  for (auto v : to_host(b, 3)) EXPECT_EQ(v, 7);
  c.barrier();
  for (void* p : {static_cast<void*>(d), static_cast<void*>(send), static_cast<void*>(recv), static_cast<void*>(one),
                  static_cast<void*>(all), static_cast<void*>(b)})
    cudaFree(p);
}
