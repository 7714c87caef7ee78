// libFuzzer target for encode and decode: arbitrary bytes (invalid UTF-8 included) must encode without crashing,
// the ids must be in range, decode must give valid UTF-8, and arbitrary ids must decode or be rejected cleanly.
// The tokenizer comes from $INTROSPECT_FUZZ_TOKENIZER (a tokenizer.json or .model).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "introspect/tokenizer/tokenizer.h"

namespace tk = introspect::tokenizer;
static std::unique_ptr<tk::Tokenizer> tokenizer;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* path = std::getenv("INTROSPECT_FUZZ_TOKENIZER");
  if (!path) std::abort();
  tokenizer = tk::Tokenizer::load(path);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto ids = tokenizer->encode(text, /*add_special=*/size % 2 == 0);
  for (const int32_t id : ids)
    if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
  const std::string decoded = tokenizer->decode(ids);
  if (tk::sanitize_utf8(decoded) != decoded) std::abort();  // decode output is always valid UTF-8
  // The same bytes read as token ids.
  std::vector<int32_t> raw;
  for (size_t i = 0; i + 3 < size; i += 4) {
    int32_t id;
    std::memcpy(&id, data + i, 4);
    raw.push_back(id % (tokenizer->vocab_size() + 8));  // mostly valid, sometimes out of range or negative
  }
  try {
    const std::string d = tokenizer->decode(raw, size % 3 == 0);
    if (tk::sanitize_utf8(d) != d) std::abort();
  } catch (const std::out_of_range&) {
  }
  return 0;
}
