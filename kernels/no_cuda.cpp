// The kernel entry points of a build with no CUDA toolkit: they report that no GPU path exists.
#include <stdexcept>

#include "introspect/kernels/smoke.h"

namespace introspect::kernels {

bool built_with_cuda() { return false; }

int cuda_device_count(std::string* why) {
  if (why) *why = "built without the CUDA toolkit";
  return 0;
}

void saxpy(int64_t, float, const float*, float*, void*) {
  throw std::runtime_error("saxpy: this build has no CUDA kernels");
}

}  // namespace introspect::kernels
