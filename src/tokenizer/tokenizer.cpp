#include <fstream>

#include "tokenizer_impl.h"

namespace introspect::tokenizer {
namespace fs = std::filesystem;

std::optional<std::string> config_token(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& path) {
  fs::path file = path;
  if (fs::is_directory(path)) {
    file = fs::exists(path / "tokenizer.json") ? path / "tokenizer.json" : path / "tokenizer.model";
    if (!fs::exists(file)) throw std::runtime_error(path.string() + ": no tokenizer.json or tokenizer.model in this folder");
  } else if (!fs::exists(path)) {
    throw std::runtime_error(path.string() + ": no such tokenizer file");
  }
  nlohmann::json config = nlohmann::json::object();
  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    std::ifstream in(config_path);
    try {
      config = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(config_path.string() + ": not valid JSON: " + e.what());
    }
  }
  if (file.extension() == ".json") return load_hf_tokenizer(file, config);
  if (file.extension() == ".model") return load_sentencepiece(file, config);
  throw std::runtime_error(file.string() + ": not a tokenizer.json or SentencePiece .model file");
}

std::string sanitize_utf8(std::string_view s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  while (i < s.size()) {
    const uint8_t b = byte(i);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    // Expected length and the allowed range of the second byte (Unicode Table 3-7).
    int len = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b == 0xE0) len = 3, lo = 0xA0;
    else if (b >= 0xE1 && b <= 0xEC) len = 3;
    else if (b == 0xED) len = 3, hi = 0x9F;
    else if (b >= 0xEE && b <= 0xEF) len = 3;
    else if (b == 0xF0) len = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) len = 4;
    else if (b == 0xF4) len = 4, hi = 0x8F;
    if (len == 0) {  // not a lead byte
      out += kReplacement;
      ++i;
      continue;
    }
    // Take the longest valid prefix; an incomplete one is a single maximal subpart -> one U+FFFD.
    size_t k = 1;
    while (static_cast<int>(k) < len && i + k < s.size()) {
      const uint8_t c = byte(i + k);
      const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
      if (!ok) break;
      ++k;
    }
    if (static_cast<int>(k) == len) {
      out.append(s.substr(i, k));
    } else {
      out += kReplacement;
    }
    i += k;
  }
  return out;
}

}  // namespace introspect::tokenizer
