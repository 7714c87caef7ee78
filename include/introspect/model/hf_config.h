// The architecture described by a Hugging Face config.json, for model_type llama, qwen2 and qwen3.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace introspect::model {

struct RopeScaling {
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelArch {
  std::string model_type;  // llama | qwen2 | qwen3
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v projections (qwen2 always)
  bool o_proj_bias = false;     // llama's attention_bias also covers o_proj
  bool mlp_bias = false;        // llama
  bool qk_norm = false;         // qwen3: RMSNorm over head_dim on q and k
  std::vector<int64_t> eos_token_ids;
  int64_t bos_token_id = -1;

  // Checks internal consistency (heads divide, sizes positive); throws std::invalid_argument naming the field.
  void validate(const std::string& source) const;
  // config.json text for this architecture, in HF's key names; torch_dtype is "float32", "bfloat16", ...
  std::string to_hf_json(const std::string& torch_dtype = "float32") const;
};

// Parses a config.json (a file, or a checkpoint folder holding one). Throws std::runtime_error naming the file
// and key for missing or ill-typed keys and unsupported model_type or rope type.
ModelArch parse_hf_config(const std::filesystem::path& path);
ModelArch parse_hf_config_text(const std::string& json_text, const std::string& source);

}  // namespace introspect::model
