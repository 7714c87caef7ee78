// config.json parsing for the three supported model types, in both of HF's rope layouts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "introspect/model/hf_config.h"

using introspect::model::parse_hf_config_text;
using ::testing::HasSubstr;

// Llama-3.1-8B-Instruct's config.json (the legacy rope_theta + rope_scaling layout).
const char* kLlama31 = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
 "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
 "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
 "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
 "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
 "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 128256})";

// Qwen3-1.7B-style config: head_dim given, tied embeddings, vocab padded beyond the tokenizer's 151,669 ids.
const char* kQwen3 = R"({"architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
 "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
 "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16,
 "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
 "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true, "use_sliding_window": false,
 "vocab_size": 151936})";

TEST(HfConfig, Llama31LegacyRopeScaling) {
  const auto a = parse_hf_config_text(kLlama31, "llama/config.json");
  EXPECT_EQ(a.head_dim, 128);
  EXPECT_EQ(a.num_kv_heads, 8);
  EXPECT_EQ(a.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, 8.0);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(a.tie_word_embeddings);
  EXPECT_FALSE(a.qk_norm);
}

TEST(HfConfig, RopeParametersLayoutOfTransformers5) {
  const auto a = parse_hf_config_text(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "rope_parameters": {"rope_type":
    "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32}})", "x");
  EXPECT_EQ(a.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_EQ(a.num_kv_heads, 2) << "defaults to num_attention_heads";
  EXPECT_EQ(a.head_dim, 4) << "defaults to hidden_size / heads";
}

TEST(HfConfig, Qwen3HeadDimQkNormAndPaddedVocab) {
  const auto a = parse_hf_config_text(kQwen3, "qwen3/config.json");
  EXPECT_EQ(a.head_dim, 128);
  EXPECT_TRUE(a.qk_norm);
  EXPECT_TRUE(a.tie_word_embeddings);
  EXPECT_EQ(a.vocab_size, 151936);
  EXPECT_EQ(a.rope_scaling.type, "default");
}

TEST(HfConfig, Qwen2AlwaysHasQkvBias) {
  const auto a = parse_hf_config_text(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})", "x");
  EXPECT_TRUE(a.attention_bias);
  EXPECT_FALSE(a.o_proj_bias);
}

TEST(HfConfig, ToHfJsonRoundTrips) {
  const auto a = parse_hf_config_text(kLlama31, "x");
  const auto b = parse_hf_config_text(a.to_hf_json("bfloat16"), "y");
  EXPECT_EQ(b.rope_scaling.type, "llama3");
  EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_DOUBLE_EQ(b.rope_theta, a.rope_theta);
  EXPECT_THAT(a.to_hf_json("bfloat16"), HasSubstr("\"torch_dtype\": \"bfloat16\""));
}

namespace {
std::string error_of(const std::string& json) {
  try {
    parse_hf_config_text(json, "ckpt/config.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}
const std::string kBase = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1)";
}  // namespace

TEST(HfConfig, ErrorsNameTheFileAndKey) {
  EXPECT_THAT(error_of(R"({"model_type": "gpt2"})"), HasSubstr("ckpt/config.json: model_type: unsupported model_type 'gpt2'"));
  EXPECT_THAT(error_of(R"({"model_type": "llama", "hidden_size": 8})"), HasSubstr("vocab_size: missing required key"));
  EXPECT_THAT(error_of(R"({"model_type": "llama", )" + kBase + R"(, "num_attention_heads": "4"})"),
              HasSubstr("num_attention_heads: expected an integer"));
  EXPECT_THAT(error_of(R"({"model_type": "llama", )" + kBase + R"(, "num_attention_heads": 3, "num_key_value_heads": 2})"),
              HasSubstr("not a multiple"));
  EXPECT_THAT(error_of(R"({"model_type": "llama", )" + kBase + R"(, "num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn"}})"),
              HasSubstr("unsupported rope type 'yarn'"));
  EXPECT_THAT(error_of(R"({"model_type": "qwen2", )" + kBase + R"(, "num_attention_heads": 2, "use_sliding_window": true})"),
              HasSubstr("sliding-window attention is not supported"));
  EXPECT_THAT(error_of("{oops"), HasSubstr("ckpt/config.json: not valid JSON"));
}
