// Process-wide LibTorch settings.
#pragma once

#include <cstdint>
#include <string>

namespace introspect::core {

// Sets LibTorch's intra-op threads explicitly (its default may be 1); 0 means every core. Returns the count.
int64_t init_torch_threads(int64_t threads);
// "2.11.0": the LibTorch the binary was built against.
std::string torch_version();

}  // namespace introspect::core
