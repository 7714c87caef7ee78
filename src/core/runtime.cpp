#include "introspect/core/runtime.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <thread>

namespace introspect::core {

int64_t init_torch(int64_t threads) {
  const int64_t n = threads > 0 ? threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(n));
  return at::get_num_threads();
}

std::string torch_version() { return TORCH_VERSION; }

}  // namespace introspect::core
