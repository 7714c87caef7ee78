// Process-wide LibTorch settings.
#pragma once

#include <cstdint>
#include <string>

namespace introspect::core {

// Process-wide LibTorch set-up, called once before any tensor is made: sets the intra-op threads explicitly
// (LibTorch's default may be 1; 0 means every core) and keeps large freed blocks in the heap for reuse.
// Returns the thread count.
int64_t init_torch(int64_t threads);
// "2.11.0": the LibTorch the binary was built against.
std::string torch_version();

}  // namespace introspect::core
