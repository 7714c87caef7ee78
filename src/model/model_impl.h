// Private to src/model: the torch::nn modules behind CausalLM.
#pragma once

#include <torch/torch.h>

#include "introspect/model/decoder.h"

namespace introspect::model {

// A weight reordered once into oneDNN's blocked layout, valid while the weight's version counter is unchanged.
struct PackedWeight {
  torch::Tensor data;
  int64_t version = -1;
  void pack(const torch::Tensor& w, int64_t batch_hint);
  bool current(const torch::Tensor& w) const { return data.defined() && static_cast<int64_t>(w._version()) == version; }
};

struct Rope {
  torch::Tensor cos, sin;  // [B, 1, T, head_dim]
};

// Linear and Embedding with uninitialised parameters: load() overwrites them and random() initialises them,
// so torch::nn's constructor-time kaiming init would be wasted work on billions of weights.
struct LinearImpl : torch::nn::Module {
  LinearImpl(int64_t in, int64_t out, bool with_bias);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;
  PackedWeight packed;  // for inference; ignored once the weight changes
};
// x @ wᵀ. Without grad and with a current packed copy of w, through oneDNN's prepacked linear; otherwise, for
// the few rows of a decode step, as (w @ xᵀ)ᵀ, which spares MKL re-packing w on every call.
torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const PackedWeight& packed);
TORCH_MODULE(Linear);

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t vocab, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids) const { return torch::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const ModelArch& a);
  // With a cache, keys and values are written at `positions` of rows `slots`, and `mask` spans the cached prefix.
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask, KVCache* cache,
                        const torch::Tensor& slots, const torch::Tensor& positions, int64_t layer);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(Attention);

struct MLPImpl : torch::nn::Module {
  explicit MLPImpl(const ModelArch& a);
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

struct DecoderLayerImpl : torch::nn::Module {
  explicit DecoderLayerImpl(const ModelArch& a);
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask, KVCache* cache,
                        const torch::Tensor& slots, const torch::Tensor& positions, int64_t layer);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

struct BackboneImpl : torch::nn::Module {
  explicit BackboneImpl(const ModelArch& a);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Backbone);

// Registered as "model" and "lm_head", giving HF's tensor names.
struct CausalLMModuleImpl : torch::nn::Module {
  explicit CausalLMModuleImpl(const ModelArch& a);
  Backbone model{nullptr};
  Linear lm_head{nullptr};  // empty when tied to the embedding
};
TORCH_MODULE(CausalLMModule);

torch::Tensor rope_inv_freq(const ModelArch& a);
Rope make_rope(const torch::Tensor& inv_freq, const torch::Tensor& positions, torch::ScalarType dtype);

struct CausalLM::Impl {
  Impl(const ModelArch& a, at::ScalarType dt);
  ForwardOutput run(const torch::Tensor& input_ids, const torch::Tensor& positions, const torch::Tensor& mask,
                    KVCache* cache, const torch::Tensor& slots, bool want_logits, bool last_logits_only = false);
  ModelArch arch;
  at::ScalarType dtype;
  CausalLMModule module;
  torch::Tensor inv_freq;
  torch::Tensor inv_freq_device;  // a copy on the inputs' device, made once (no host copy inside a CUDA graph)
  const torch::Tensor& inv_freq_on(const torch::Device& device);
  bool checkpointing = false;
  PackedWeight packed_head;  // lm_head (or the tied embedding) for inference
};

}  // namespace introspect::model
