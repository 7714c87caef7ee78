// SentencePiece .model files (Llama-2 style, byte fallback) through Debian's libsentencepiece. Linked directly:
// with the torch 2.11 wheel there is no protobuf clash (measured: both link orders load and encode correctly,
// and the SPM tests run in binaries that also load LibTorch), so no dlmopen shim is needed.
#include <sentencepiece_processor.h>

#include "tokenizer_impl.h"

namespace introspect::tokenizer {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, const nlohmann::json& config) : source_(path.string()) {
    const auto status = sp_.Load(path.string());
    if (!status.ok()) throw std::runtime_error(source_ + ": cannot load SentencePiece model: " + status.ToString());
    if (sp_.bos_id() >= 0) bos_id_ = sp_.bos_id();
    if (sp_.eos_id() >= 0) eos_id_ = sp_.eos_id();
    // Llama-2's rule when tokenizer_config.json says nothing: BOS yes, EOS no.
    const bool add_bos = config.value("add_bos_token", true), add_eos = config.value("add_eos_token", false);
    if (add_bos && bos_id_) prefix_.push_back(*bos_id_);
    if (add_eos && eos_id_) suffix_.push_back(*eos_id_);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(sanitize_utf8(text), &ids);
    if (!status.ok()) throw std::runtime_error(source_ + ": encode failed: " + status.ToString());
    std::vector<int32_t> out;
    if (add_special) out = prefix_;
    out.insert(out.end(), ids.begin(), ids.end());
    if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      std::string piece;
      const auto status = sp_.Decode(run, &piece);
      if (!status.ok()) throw std::runtime_error(source_ + ": decode failed: " + status.ToString());
      out += sanitize_utf8(piece);
      run.clear();
    };
    for (const int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        throw std::out_of_range(source_ + ": token id " + std::to_string(id) + " is not in the vocabulary");
      }
      if (is_special(id)) {
        flush();
        if (!skip_special) out += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = sp_.PieceToId(std::string(token));
    if (id == sp_.unk_id() && token != sp_.IdToPiece(sp_.unk_id())) return std::nullopt;
    return id;
  }
  bool is_special(int32_t id) const override { return sp_.IsControl(id) || sp_.IsUnknown(id); }

 private:
  std::string source_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path, const nlohmann::json& config) {
  return std::make_unique<SentencePieceTokenizer>(path, config);
}

}  // namespace introspect::tokenizer
