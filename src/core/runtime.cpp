#include "introspect/core/runtime.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <malloc.h>

#include <thread>

namespace introspect::core {

int64_t init_torch(int64_t threads) {
  // Keep large freed blocks in the heap: otherwise glibc unmaps every multi-megabyte tensor (logits, KV views)
  // when it dies and the next step pays page faults and zeroing for fresh pages.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const int64_t n = threads > 0 ? threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(n));
  return at::get_num_threads();
}

std::string torch_version() { return TORCH_VERSION; }

}  // namespace introspect::core
