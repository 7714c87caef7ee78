// A minimal CUDA kernel and its CPU twin, to prove the toolkit, the build and (on a GPU) the driver work.
// Kernel APIs take plain pointers and a stream, so no torch header reaches nvcc.
#pragma once

#include <cstdint>
#include <string>

namespace introspect::kernels {

// True when this binary was built with nvcc.
bool built_with_cuda();
// Usable CUDA devices; 0 with `why` set when there is no toolkit, driver or device.
int cuda_device_count(std::string* why);
// y = a*x + y over device pointers; `stream` is a cudaStream_t (nullptr for the default stream).
void saxpy(int64_t n, float a, const float* x, float* y, void* stream);
// The CPU twin of saxpy.
void saxpy_reference(int64_t n, float a, const float* x, float* y);

}  // namespace introspect::kernels
