#include "introspect/kernels/smoke.h"

namespace introspect::kernels {

void saxpy_reference(int64_t n, float a, const float* x, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}

}  // namespace introspect::kernels
