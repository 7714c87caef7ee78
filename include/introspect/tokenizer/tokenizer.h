// One Tokenizer interface over HF tokenizer.json byte-level BPE (Qwen2/Qwen3, Llama-3, GPT-2) and SentencePiece
// .model files (Llama-2 style), picked from a checkpoint folder's files.
//
// Invalid UTF-8 input: encode() first replaces each maximal invalid byte sequence by U+FFFD, exactly as
// Python's bytes.decode("utf-8", errors="replace") does, so it never fails on bad bytes. decode() of ids whose
// bytes do not form valid UTF-8 (e.g. half of a multi-byte character) likewise returns U+FFFD for them, as HF
// tokenizers does.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace introspect::tokenizer {


class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids. Added and special tokens written in the text are matched as such. With add_special, the
  // checkpoint's rules for BOS/EOS (add_bos_token / add_eos_token in tokenizer_config.json) apply.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = false) const = 0;
  // Ids to text; skip_special drops tokens marked special (BOS, EOS, <|im_end|>, ...).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;  // highest id + 1, added tokens included
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

  // A tokenizer.json, a tokenizer.model, or a checkpoint folder holding either (tokenizer.json is preferred).
  // Special tokens added by encode(add_special): tokenizer.json's TemplateProcessing post-processor, overridden
  // by add_bos_token / add_eos_token in tokenizer_config.json beside it; a bare .model adds BOS (Llama-2's rule).
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& path);

 protected:
  std::optional<int32_t> bos_id_, eos_id_;
  std::vector<int32_t> prefix_, suffix_;  // what encode(add_special=true) puts around the ids
};

// Replaces each maximal invalid UTF-8 subsequence with U+FFFD (Python's errors="replace" rule).
std::string sanitize_utf8(std::string_view text);

// GPT-2's byte-level alphabet: the vocabulary symbol that stands for a raw byte in byte-level BPE files.
const std::string& byte_level_symbol(uint8_t byte);

}  // namespace introspect::tokenizer
