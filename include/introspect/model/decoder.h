// The decoder-only causal LM of Llama, Qwen2 and Qwen3 in LibTorch, with HF parameter names so checkpoints
// load and save without renaming. Callers see only <ATen/core/Tensor.h>; the modules live in decoder.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "introspect/model/hf_config.h"

namespace introspect::model {

struct ForwardOutput {
  at::Tensor hidden;  // [B, T, hidden_size], after the final norm (G²RL reads it)
  at::Tensor logits;  // [B, T, vocab] when asked for, else undefined
};

// Preallocated keys and values for `slots` sequences of up to `max_len` tokens.
struct KVCache {
  KVCache(const ModelArch& arch, int64_t slots, int64_t max_len, at::ScalarType dtype, at::Device device = at::kCPU);
  static int64_t bytes_needed(const ModelArch& arch, int64_t slots, int64_t max_len, at::ScalarType dtype);
  std::vector<at::Tensor> k, v;  // per layer: [slots, kv_heads, max_len, head_dim]
  int64_t slots, max_len;
};

class CausalLM {
 public:
  // Random init as HF does: normal(0, 0.02) for matrices and embeddings, zero biases, unit norms.
  static CausalLM random(const ModelArch& arch, uint64_t seed, at::ScalarType dtype = at::kFloat);
  // Loads config.json and the *.safetensors of a checkpoint folder (sharded or not), converting F32/BF16/F16
  // weights to `dtype`. Errors name the file and tensor.
  static CausalLM load(const std::filesystem::path& dir, at::ScalarType dtype = at::kFloat);
  // Writes an HF folder: config.json, model.safetensors (or shards of at most `max_shard_bytes` plus the index),
  // and the tokenizer files found in `tokenizer_source` (a checkpoint folder), if given.
  void save(const std::filesystem::path& dir, uint64_t max_shard_bytes = 5'000'000'000ull,
            const std::filesystem::path& tokenizer_source = {}) const;

  const ModelArch& arch() const;
  at::ScalarType dtype() const;

  // Training forward. input_ids, position_ids and segment_ids are [B, T] int64. A token attends to earlier
  // tokens of its own segment; segment -1 marks padding. A padded batch uses segment 0 for its tokens; packed
  // sequences in one row take segments 0, 1, 2, ... with positions restarting at 0 for each.
  ForwardOutput forward(const at::Tensor& input_ids, const at::Tensor& position_ids, const at::Tensor& segment_ids,
                        bool want_logits = true) const;
  // A left- or right-padded batch: attention_mask [B, T] is 1 for tokens and 0 for padding; positions count
  // the tokens of each row, as HF does.
  ForwardOutput forward_padded(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                               bool want_logits = true) const;
  // Incremental forward: input_ids [B, t] continue the sequences held in cache rows `slots` [B] at positions
  // [B, t]; their keys and values are written into the cache, and each token attends to its slot's cache up to
  // its own position. With last_logits_only, logits are computed for the last position of each row only
  // ([B, 1, vocab]), which is all a prefill needs.
  ForwardOutput forward_cached(const at::Tensor& input_ids, const at::Tensor& positions, const at::Tensor& slots,
                               KVCache& cache, bool last_logits_only = false) const;

  // One decode step of cache rows 0..B-1 that never reads a tensor back to the host: attention runs over every
  // position of the cache, masked beyond each row's own, so all shapes are fixed and a CUDA graph can capture
  // it (gpu::GraphedDecoder). Positions must stay below cache.max_len (not checked: that would sync).
  ForwardOutput forward_static_step(const at::Tensor& input_ids, const at::Tensor& positions, KVCache& cache) const;

  at::Tensor lm_head_weight() const;  // [vocab, hidden]; the embedding when tied
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<at::Tensor> parameters() const;
  void set_activation_checkpointing(bool on);
  // Moves every parameter to `device` (the RoPE table follows the inputs' device on each call).
  void to(at::Device device);
  // Reorders the projection weights once for fast inference (oneDNN's prepacked linear, when the LibTorch has
  // it). Used only with grad disabled, and a packed copy is ignored as soon as its weight changes, so training
  // never reads a stale one; call again after an update to re-pack.
  void pack_for_inference(int64_t batch_hint) const;

 private:
  struct Impl;
  explicit CausalLM(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// log p(targets[i]) under softmax(hidden[i] @ weightᵀ / temperature), fp32, differentiable in hidden and
// weight. Works `chunk` rows at a time in forward and backward (recomputing logits), so no [N × vocab] fp32
// tensor ever exists. hidden [N, H], weight [V, H], targets [N] int64.
at::Tensor chunked_token_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                  double temperature = 1.0, int64_t chunk = 1024);
// The same log-probs plus each row's entropy of softmax(logits / temperature), both differentiable.
std::pair<at::Tensor, at::Tensor> chunked_token_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                                                 const at::Tensor& targets, double temperature = 1.0,
                                                                 int64_t chunk = 1024);

// G²RL's sequence features in the same chunked pass (no autograd): for sequence s, with c_s its normalised
// token histogram and p̄_s its mean predicted distribution at `temperature`,
//   Φ_s = weightᵀ (c_s − p̄_s)  [num_segments, H] fp32,
// which equals the mean over its tokens of φ_t = T · ∂ log p(y_t) / ∂ h_t. p̄ accumulates chunk by chunk in fp32,
// so only [num_segments × vocab] is held, never [N × vocab]. segments [N] maps rows to sequences.
struct TokenFeatures {
  at::Tensor logp, entropy;  // [N]
  at::Tensor features;       // [num_segments, H]
};
TokenFeatures chunked_logprobs_and_features(const at::Tensor& hidden, const at::Tensor& weight,
                                            const at::Tensor& targets, const at::Tensor& segments,
                                            int64_t num_segments, double temperature = 1.0, int64_t chunk = 1024);

}  // namespace introspect::model
