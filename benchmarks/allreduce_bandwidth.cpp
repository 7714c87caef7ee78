// All-reduce bandwidth of dist::Communicator, reported as nccl-tests does: algbw = bytes / time and
// busbw = algbw * 2 (n - 1) / n (the per-link traffic of a ring; 0 by definition on one rank).
//
//   mpirun -np 2 build/bin/bench_allreduce                 # MPI engine, host buffers
//   build/bin/bench_allreduce --nccl                       # NCCL engine, device buffers (world size 1)
//   mpirun -np 8 build/bin/bench_allreduce --nccl          # one GPU per rank
//
// Options: --nccl, --max-mb N (default 256), --iters N (default 20). Rank 0 prints a table and one JSON line
// per size; the time of a size is the slowest rank's mean over the iterations.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "introspect/dist/communicator.h"
#ifdef INTROSPECT_HAVE_NCCL
#include <cuda_runtime.h>

#include "introspect/dist/nccl.h"
#endif

namespace dist = introspect::dist;

int main(int argc, char** argv) {
  bool use_nccl = false;
  double max_mb = 256;
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nccl") use_nccl = true;
    else if (a == "--max-mb" && i + 1 < argc) max_mb = std::atof(argv[++i]);
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--nccl] [--max-mb N] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  auto host = dist::from_environment(600);
  std::unique_ptr<dist::Communicator> device_comm;
  dist::Communicator* comm = host.get();
  const size_t max_bytes = static_cast<size_t>(max_mb * (1 << 20));
  void* buffer = nullptr;
  std::vector<float> host_buffer;
  if (use_nccl) {
#ifdef INTROSPECT_HAVE_NCCL
    device_comm = dist::make_nccl(*host, nullptr, 600);
    comm = device_comm.get();
    if (cudaMalloc(&buffer, max_bytes) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc of %zu bytes failed\n", max_bytes);
      return 1;
    }
    // The NCCL engine runs on its own non-blocking stream: finish the fill before the first collective.
    cudaMemset(buffer, 0, max_bytes);
    cudaDeviceSynchronize();
#else
    std::fprintf(stderr, "this build has no NCCL (no CUDA toolkit with NCCL was found at configure time)\n");
    return 1;
#endif
  } else {
    host_buffer.assign(max_bytes / 4, 1.0f);
    buffer = host_buffer.data();
  }
  const int n = comm->world_size();
  if (comm->rank() == 0)
    std::printf("all_reduce (sum, float32), %s engine, %d rank(s)\n%12s %12s %12s %12s\n", comm->backend().c_str(), n,
                "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
  for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const size_t count = bytes / 4;
    for (int w = 0; w < 3; ++w) comm->all_reduce(buffer, count, dist::DType::kFloat32, dist::ReduceOp::kSum);
    comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < iters; ++k) comm->all_reduce(buffer, count, dist::DType::kFloat32, dist::ReduceOp::kSum);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    host->all_reduce(&seconds, 1, dist::DType::kFloat64, dist::ReduceOp::kMax);
    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    if (comm->rank() == 0) {
      std::printf("%12zu %12.1f %12.3f %12.3f\n", bytes, seconds * 1e6, algbw, busbw);
      std::printf("{\"engine\": \"%s\", \"ranks\": %d, \"bytes\": %zu, \"time_us\": %.2f, \"algbw_GBps\": %.4f, "
                  "\"busbw_GBps\": %.4f}\n",
                  comm->backend().c_str(), n, bytes, seconds * 1e6, algbw, busbw);
    }
  }
#ifdef INTROSPECT_HAVE_NCCL
  if (use_nccl) cudaFree(buffer);
#endif
  return 0;
}
