// Timing, peak-memory and roofline helpers shared by the GPU benchmarks (kernel lab, training step, decode).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace introspect::bench {

// Milliseconds per call: `warmup` untimed calls, then the mean of `reps`, synchronised around the timed loop.
inline double time_ms(const std::function<void()>& fn, int warmup = 2, int reps = 5) {
  for (int i = 0; i < warmup; ++i) fn();
  torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

// Bytes the caching allocator held at its peak during fn, above what was allocated before it.
inline int64_t peak_extra_bytes(const std::function<void()>& fn) {
  using namespace c10::cuda::CUDACachingAllocator;
  torch::cuda::synchronize();
  const int device = at::cuda::current_device();
  const int64_t before = getDeviceStats(device).allocated_bytes[0].current;
  resetPeakStats(device);
  fn();
  torch::cuda::synchronize();
  return getDeviceStats(device).allocated_bytes[0].peak - before;
}

// Datasheet peaks of the card, by name: dense bf16 FLOP/s and HBM bytes/s.
struct Peaks {
  std::string name;
  double bf16_flops, hbm_bytes;
};
inline Peaks device_peaks() {
  const std::string name = at::cuda::getCurrentDeviceProperties()->name;
  if (name.find("H200") != std::string::npos) return {name, 989e12, 4.8e12};
  if (name.find("H100") != std::string::npos) return {name, 989e12, 3.35e12};
  if (name.find("A100") != std::string::npos) return {name, 312e12, 2.0e12};
  return {name, 0, 0};
}

}  // namespace introspect::bench
