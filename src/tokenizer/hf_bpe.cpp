// HF tokenizer.json byte-level BPE: added tokens matched first, then NFC (utf8proc), the Split pre-tokenizer
// regex (PCRE2 with Unicode properties), GPT-2's byte-to-unicode map, BPE merges by rank, and the ByteLevel
// decoder.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "tokenizer_impl.h"

namespace introspect::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's reversible byte <-> printable-codepoint map.
struct ByteLevelAlphabet {
  std::string byte_to_text[256];
  std::unordered_map<uint32_t, uint8_t> codepoint_to_byte;

  ByteLevelAlphabet() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : 256 + extra++;
      codepoint_to_byte[cp] = static_cast<uint8_t>(b);
      utf8proc_uint8_t buf[4];
      const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
      byte_to_text[b].assign(reinterpret_cast<char*>(buf), n);
    }
  }
};

const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

// GPT-2's pre-tokenizer, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& source) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                          &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::runtime_error(source + ": pre-tokenizer regex does not compile at offset " + std::to_string(offset) +
                               ": " + reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Isolated split: every match and every gap between matches becomes a piece. `text` is valid UTF-8.
  void split(std::string_view text, std::vector<std::string_view>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0, gap = 0;
    while (pos <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[0] > gap) out.push_back(text.substr(gap, ov[0] - gap));
      if (ov[1] > ov[0]) {
        out.push_back(text.substr(ov[0], ov[1] - ov[0]));
        pos = gap = ov[1];
      } else {
        // Empty match: step one whole character forward.
        if (ov[0] >= text.size()) break;
        pos = ov[0] + 1;
        while (pos < text.size() && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) ++pos;
      }
    }
    if (gap < text.size()) out.push_back(text.substr(gap));
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip;
};

// Finds added tokens in text: leftmost match, longest at that position (HF's rule).
class AddedTokenMatcher {
 public:
  void add(const AddedToken& t) {
    int node = 0;
    for (unsigned char c : t.content) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.push_back({});
        it = nodes_[node].next.emplace(c, static_cast<int>(nodes_.size()) - 1).first;
      }
      node = it->second;
    }
    nodes_[node].token = static_cast<int>(tokens_.size());
    tokens_.push_back(t);
  }
  // The longest added token starting at text[pos], or null.
  const AddedToken* match(std::string_view text, size_t pos, size_t& len) const {
    int node = 0, best = -1;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto it = nodes_[node].next.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        len = i + 1 - pos;
      }
    }
    return best >= 0 ? &tokens_[best] : nullptr;
  }
  bool empty() const { return tokens_.empty(); }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int token = -1;
  };
  std::vector<Node> nodes_{1};
  std::vector<AddedToken> tokens_;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class HfBpeTokenizer final : public Tokenizer {
 public:
  HfBpeTokenizer(const std::filesystem::path& path, const json& config);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const auto it = vocab_.find(std::string(token));
    if (it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  bool is_special(int32_t id) const override { return id >= 0 && id < vocab_size() && special_[id]; }

 private:
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::string source_;
  std::unordered_map<std::string, int32_t> vocab_;  // byte-level token text -> id, added tokens included
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_, added_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left id, right id) -> (rank, merged id)
  int32_t byte_ids_[256];
  bool nfc_ = false, ignore_merges_ = false;
  std::unique_ptr<Regex> split_;
  AddedTokenMatcher added_tokens_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // BPE result per pre-token
};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

HfBpeTokenizer::HfBpeTokenizer(const std::filesystem::path& path, const json& config) : source_(path.string()) {
  std::ifstream in(path);
  if (!in) fail(source_, "cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(source_, std::string("not valid JSON: ") + e.what());
  }
  const json& model = j.at("model");
  if (model.value("type", "") != "BPE") fail(source_, "model.type '" + model.value("type", "") + "' is not supported (BPE is)");
  ignore_merges_ = model.value("ignore_merges", false);

  // Normalizer: none or NFC (possibly inside a Sequence).
  const json& norm = j.value("normalizer", json());
  auto check_normalizer = [&](const json& n) {
    const std::string type = n.value("type", "");
    if (type == "NFC") nfc_ = true;
    else fail(source_, "normalizer '" + type + "' is not supported (NFC is)");
  };
  if (norm.is_object()) {
    if (norm.value("type", "") == "Sequence") {
      for (const auto& n : norm.at("normalizers")) check_normalizer(n);
    } else {
      check_normalizer(norm);
    }
  }

  // Pre-tokenizer: [Split(regex, Isolated)] then ByteLevel(use_regex=false), or ByteLevel(use_regex=true).
  const json& pre = j.value("pre_tokenizer", json());
  std::vector<json> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence") {
    for (const auto& p : pre.at("pretokenizers")) steps.push_back(p);
  } else if (pre.is_object()) {
    steps.push_back(pre);
  }
  bool byte_level = false;
  for (const auto& step : steps) {
    const std::string type = step.value("type", "");
    if (type == "Split") {
      if (step.value("behavior", "") != "Isolated" || step.value("invert", false) || !step.at("pattern").contains("Regex")) {
        fail(source_, "only Split pre-tokenizers with a Regex pattern, Isolated behaviour and no invert are supported");
      }
      if (split_) fail(source_, "more than one Split pre-tokenizer is not supported");
      split_ = std::make_unique<Regex>(step["pattern"]["Regex"].get<std::string>(), source_);
    } else if (type == "ByteLevel") {
      byte_level = true;
      if (step.value("add_prefix_space", false)) fail(source_, "ByteLevel add_prefix_space is not supported");
      if (step.value("use_regex", true)) {
        if (split_) fail(source_, "Split followed by ByteLevel(use_regex) is not supported");
        split_ = std::make_unique<Regex>(kGpt2Pattern, source_);
      }
    } else {
      fail(source_, "pre-tokenizer '" + type + "' is not supported (Split and ByteLevel are)");
    }
  }
  if (!byte_level) fail(source_, "only byte-level BPE tokenizer.json files are supported (no ByteLevel pre-tokenizer)");
  const json& dec = j.value("decoder", json());
  if (!dec.is_object() || dec.value("type", "") != "ByteLevel") fail(source_, "decoder must be ByteLevel");

  // Vocabulary, then added tokens (which may extend it).
  int32_t max_id = -1;
  for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
    vocab_[it.key()] = it.value().get<int32_t>();
    max_id = std::max(max_id, it.value().get<int32_t>());
  }
  std::vector<AddedToken> added;
  for (const auto& a : j.value("added_tokens", json::array())) {
    added.push_back({a.at("content").get<std::string>(), a.at("id").get<int32_t>(), a.value("special", false),
                     a.value("lstrip", false), a.value("rstrip", false)});
    max_id = std::max(max_id, added.back().id);
  }
  id_to_token_.resize(max_id + 1);
  special_.assign(max_id + 1, false);
  added_.assign(max_id + 1, false);
  for (const auto& [text, id] : vocab_) id_to_token_[id] = text;
  for (const auto& a : added) {
    id_to_token_[a.id] = a.content;
    vocab_[a.content] = a.id;
    special_[a.id] = a.special;
    added_[a.id] = true;
    added_tokens_.add(a);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(alphabet().byte_to_text[b]);
    if (it == vocab_.end()) fail(source_, "vocab lacks the byte-level token for byte " + std::to_string(b));
    byte_ids_[b] = it->second;
  }

  // Merges: ["a", "b"] pairs (newer files) or "a b" strings (older ones).
  int32_t rank = 0;
  for (const auto& m : model.at("merges")) {
    std::string left, right;
    if (m.is_array() && m.size() == 2) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const auto space = s.find(' ', 1);
      if (space == std::string::npos) fail(source_, "merge '" + s + "' is not of the form 'a b'");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {
      fail(source_, "merge #" + std::to_string(rank) + " is neither a pair nor a string");
    }
    const auto l = vocab_.find(left), r = vocab_.find(right), lr = vocab_.find(left + right);
    if (l == vocab_.end() || r == vocab_.end() || lr == vocab_.end()) {
      fail(source_, "merge '" + left + " " + right + "' names a token missing from the vocab");
    }
    const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    merges_.emplace(key, std::make_pair(rank++, lr->second));
  }

  // Special tokens around encode(add_special): TemplateProcessing, then tokenizer_config.json overrides.
  const json& post = j.value("post_processor", json());
  if (post.is_object() && post.value("type", "") == "TemplateProcessing") {
    bool after = false;
    for (const auto& piece : post.at("single")) {
      if (piece.contains("Sequence")) {
        after = true;
      } else if (piece.contains("SpecialToken")) {
        const auto id = token_to_id(piece["SpecialToken"].at("id").get<std::string>());
        if (!id) fail(source_, "post_processor names an unknown special token");
        (after ? suffix_ : prefix_).push_back(*id);
      }
    }
  }
  if (const auto bos = config_token(config, "bos_token")) bos_id_ = token_to_id(*bos);
  if (const auto eos = config_token(config, "eos_token")) eos_id_ = token_to_id(*eos);
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
    prefix_.clear();
    if (config["add_bos_token"].get<bool>() && bos_id_) prefix_.push_back(*bos_id_);
  }
  if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) {
    suffix_.clear();
    if (config["add_eos_token"].get<bool>() && eos_id_) suffix_.push_back(*eos_id_);
  }
}

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view raw, bool add_special) const {
  const std::string text = sanitize_utf8(raw);
  std::vector<int32_t> out;
  if (add_special) out = prefix_;
  // Split around added tokens; lstrip/rstrip tokens swallow the whitespace beside them.
  size_t seg_start = 0, pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    const AddedToken* tok = added_tokens_.empty() ? nullptr : added_tokens_.match(text, pos, len);
    if (!tok) {
      ++pos;
      continue;
    }
    size_t seg_end = pos;
    if (tok->lstrip)
      while (seg_end > seg_start && is_space(text[seg_end - 1])) --seg_end;
    encode_segment(std::string_view(text).substr(seg_start, seg_end - seg_start), out);
    out.push_back(tok->id);
    pos += len;
    if (tok->rstrip)
      while (pos < text.size() && is_space(text[pos])) ++pos;
    seg_start = pos;
  }
  encode_segment(std::string_view(text).substr(seg_start), out);
  if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

void HfBpeTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  if (nfc_) {
    utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(std::string(text).c_str()));
    if (nfc) {
      normalized.assign(reinterpret_cast<char*>(nfc));
      std::free(nfc);
      text = normalized;
    }
  }
  std::vector<std::string_view> pieces;
  split_->split(text, pieces);
  for (const auto& piece : pieces) encode_word(piece, out);
}

void HfBpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto hit = cache_.find(key);
    if (hit != cache_.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  if (ignore_merges_) {
    std::string text;
    for (unsigned char c : word) text += alphabet().byte_to_text[c];
    const auto it = vocab_.find(text);
    if (it != vocab_.end() && !added_[it->second]) symbols.push_back(it->second);
  }
  if (symbols.empty()) {
    for (unsigned char c : word) symbols.push_back(byte_ids_[c]);
    // Merge the lowest-ranked adjacent pair, all its occurrences left to right, until none applies.
    while (symbols.size() > 1) {
      int32_t best_rank = INT32_MAX, merged = -1;
      uint64_t best_key = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const uint64_t k = (static_cast<uint64_t>(symbols[i]) << 32) | static_cast<uint32_t>(symbols[i + 1]);
        const auto it = merges_.find(k);
        if (it != merges_.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          merged = it->second.second;
          best_key = k;
        }
      }
      if (merged < 0) break;
      std::vector<int32_t> next;
      next.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() &&
            ((static_cast<uint64_t>(symbols[i]) << 32) | static_cast<uint32_t>(symbols[i + 1])) == best_key) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(symbols[i]);
        }
      }
      symbols.swap(next);
    }
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() > 200'000) cache_.clear();  // bound memory on adversarial input
  cache_.emplace(std::move(key), std::move(symbols));
}

std::string HfBpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out, bytes;
  auto flush = [&] {
    out += sanitize_utf8(bytes);  // lossy, per run of byte-level tokens, as HF's ByteLevel decoder
    bytes.clear();
  };
  for (const int32_t id : ids) {
    if (id < 0) throw std::out_of_range(source_ + ": token id " + std::to_string(id) + " is negative");
    // Ids past the tokenizer's vocabulary (a model's padded embedding rows, e.g. Qwen3's 151,669..151,935)
    // decode to nothing, as HF tokenizers does: a random or early policy can sample them.
    if (id >= vocab_size() || id_to_token_[id].empty()) continue;
    if (added_[id]) {
      flush();
      if (!(skip_special && special_[id])) out += id_to_token_[id];
      continue;
    }
    const std::string& text = id_to_token_[id];
    for (size_t i = 0; i < text.size();) {
      utf8proc_int32_t cp;
      const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data()) + i, text.size() - i, &cp);
      if (n <= 0) break;
      const auto it = alphabet().codepoint_to_byte.find(static_cast<uint32_t>(cp));
      if (it != alphabet().codepoint_to_byte.end()) bytes += static_cast<char>(it->second);
      i += n;
    }
  }
  flush();
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& path, const json& config) {
  return std::make_unique<HfBpeTokenizer>(path, config);
}

const std::string& byte_level_symbol(uint8_t byte) { return alphabet().byte_to_text[byte]; }

}  // namespace introspect::tokenizer
