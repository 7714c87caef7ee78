// Private to src/tokenizer: the two implementations behind Tokenizer::load.
#pragma once

#include <nlohmann/json.hpp>

#include "introspect/tokenizer/tokenizer.h"

namespace introspect::tokenizer {

// HF tokenizer.json (byte-level BPE). `config` is tokenizer_config.json, or null.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json, const nlohmann::json& config);
// A SentencePiece .model through libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& model, const nlohmann::json& config);

// A token given in tokenizer_config.json: a string, {"content": string}, or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* key);

}  // namespace introspect::tokenizer
