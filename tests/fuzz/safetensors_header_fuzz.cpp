// libFuzzer target: any byte string, taken as a whole safetensors file, must either parse into a header whose
// ranges lie inside the input, or raise SafetensorsError; never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "introspect/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = introspect::io::parse_header(data, size, "fuzz.safetensors");
    for (const auto& t : header.tensors) {
      if (t.end > size || t.begin > t.end || t.begin < header.data_start) std::abort();
      volatile uint8_t sink = t.end > t.begin ? data[t.end - 1] : 0;  // touch the last byte under ASan
      (void)sink;
    }
  } catch (const introspect::io::SafetensorsError&) {
  }
  return 0;
}
