#include "introspect/model/hf_config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace introspect::model {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class Reader {
 public:
  Reader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(source_ + ": " + key + ": " + what);
  }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t integer(const char* key) const {
    if (!has(key)) fail(key, "missing required key");
    return integer_value(j_[key], key);
  }
  int64_t integer(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_number()) fail(key, "expected a number");
    return j_[key].get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) fail(key, "expected true or false");
    return j_[key].get<bool>();
  }
  std::string string(const char* key) const {
    if (!has(key)) fail(key, "missing required key");
    if (!j_[key].is_string()) fail(key, "expected a string");
    return j_[key].get<std::string>();
  }
  // An integer or a list of integers (eos_token_id may be either).
  std::vector<int64_t> integers(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = j_[key];
    if (v.is_array()) {
      for (const auto& e : v) out.push_back(integer_value(e, key));
    } else {
      out.push_back(integer_value(v, key));
    }
    return out;
  }
  const json& raw() const { return j_; }

 private:
  int64_t integer_value(const json& v, const std::string& key) const {
    if (!v.is_number_integer()) fail(key, "expected an integer");
    return v.get<int64_t>();
  }
  const json& j_;
  std::string source_;
};

RopeScaling parse_rope(const json& r, const std::string& source, const std::string& key) {
  RopeScaling s;
  if (!r.is_object()) throw std::runtime_error(source + ": " + key + ": expected an object");
  const Reader rr(r, source + ": " + key);
  s.type = rr.has("rope_type") ? rr.string("rope_type") : rr.has("type") ? rr.string("type") : "default";
  if (s.type != "default" && s.type != "linear" && s.type != "llama3") {
    rr.fail("rope_type", "unsupported rope type '" + s.type + "' (supported: default, linear, llama3)");
  }
  s.factor = rr.number("factor", 1.0);
  s.low_freq_factor = rr.number("low_freq_factor", 1.0);
  s.high_freq_factor = rr.number("high_freq_factor", 4.0);
  s.original_max_position_embeddings = rr.integer("original_max_position_embeddings", 8192);
  if (s.type == "llama3" && !(s.high_freq_factor > s.low_freq_factor)) {
    rr.fail("high_freq_factor", "must exceed low_freq_factor for llama3 rope scaling");
  }
  return s;
}

}  // namespace

void ModelArch::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    if (v <= 0) throw std::invalid_argument(source + ": " + key + " must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (num_heads % num_kv_heads != 0) {
    throw std::invalid_argument(source + ": num_attention_heads (" + std::to_string(num_heads) +
                                ") is not a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  }
  if (head_dim % 2 != 0) throw std::invalid_argument(source + ": head_dim must be even for RoPE");
}

ModelArch parse_hf_config_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(source + ": expected a JSON object");
  const Reader r(j, source);
  ModelArch a;
  a.model_type = r.string("model_type");
  if (a.model_type != "llama" && a.model_type != "qwen2" && a.model_type != "qwen3") {
    r.fail("model_type", "unsupported model_type '" + a.model_type + "' (supported: llama, qwen2, qwen3)");
  }
  a.vocab_size = r.integer("vocab_size");
  a.hidden_size = r.integer("hidden_size");
  a.intermediate_size = r.integer("intermediate_size");
  a.num_layers = r.integer("num_hidden_layers");
  a.num_heads = r.integer("num_attention_heads");
  a.num_kv_heads = r.integer("num_key_value_heads", a.num_heads);
  a.head_dim = r.integer("head_dim", a.num_heads > 0 ? a.hidden_size / a.num_heads : 0);
  a.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  a.max_position_embeddings = r.integer("max_position_embeddings", 2048);
  a.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (r.has("hidden_act") && r.string("hidden_act") != "silu") {
    r.fail("hidden_act", "unsupported activation '" + r.string("hidden_act") + "' (supported: silu)");
  }
  if (r.boolean("use_sliding_window", false)) r.fail("use_sliding_window", "sliding-window attention is not supported");

  // RoPE: transformers >= 5 writes rope_parameters {rope_type, rope_theta, ...}; older files write rope_theta
  // at the top level and rope_scaling (null or {type|rope_type, ...}).
  if (r.has("rope_parameters")) {
    const json& p = j["rope_parameters"];
    a.rope_scaling = parse_rope(p, source, "rope_parameters");
    a.rope_theta = Reader(p, source + ": rope_parameters").number("rope_theta", r.number("rope_theta", 10000.0));
  } else {
    a.rope_theta = r.number("rope_theta", 10000.0);
    if (r.has("rope_scaling")) a.rope_scaling = parse_rope(j["rope_scaling"], source, "rope_scaling");
  }

  if (a.model_type == "qwen2") {
    a.attention_bias = true;  // Qwen2 always has q/k/v bias and no o_proj bias
  } else if (a.model_type == "qwen3") {
    a.attention_bias = a.o_proj_bias = r.boolean("attention_bias", false);
    a.qk_norm = true;
  } else {
    a.attention_bias = a.o_proj_bias = r.boolean("attention_bias", false);
    a.mlp_bias = r.boolean("mlp_bias", false);
  }
  a.eos_token_ids = r.integers("eos_token_id");
  a.bos_token_id = r.integer("bos_token_id", -1);
  a.validate(source);
  return a;
}

ModelArch parse_hf_config(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "config.json" : path;
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open config.json");
  std::stringstream s;
  s << in.rdbuf();
  return parse_hf_config_text(s.str(), file.string());
}

std::string ModelArch::to_hf_json(const std::string& torch_dtype) const {
  static const char* kArchitectures[][2] = {
      {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  json j;
  for (const auto& [type, arch] : kArchitectures)
    if (model_type == type) j["architectures"] = {arch};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

}  // namespace introspect::model
