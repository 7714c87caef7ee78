// LibTorch entry points to the CUDA kernels of kernels/ (CUDA tensors only). Built into introspect_gpu when the
// toolkit and a CUDA LibTorch are present; binaries that never touch a GPU do not link it.
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "introspect/kernels/grouped_advantage.h"
#include "introspect/model/decoder.h"

namespace introspect::gpu {

// True when a CUDA device is usable from this process; `why` says why not.
bool cuda_usable(std::string* why = nullptr);

// The fused LM-head pass of kernels/fused_logprob.cu as a LibTorch autograd function: log p(targets) and the
// entropy under softmax(hidden · weightᵀ / T), both differentiable in hidden and weight, with cuBLAS GEMMs in
// hidden's dtype (bf16 or fp32; weight is cast to it) and fp32 logits one chunk of rows at a time, recomputed in
// the backward. Peak extra memory is one [rows × vocab] fp32 chunk (plus a bf16 copy in the backward), capped at
// `chunk_bytes`, never [tokens × vocab]. Same contract as model::chunked_token_logprobs_entropy.
std::pair<at::Tensor, at::Tensor> fused_token_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                                               const at::Tensor& targets, double temperature = 1.0,
                                                               int64_t chunk_bytes = int64_t{1} << 30);
// The no-grad old-log-prob pass with G²RL's features, as model::chunked_logprobs_and_features; rows with a
// negative segment id are left out of every sequence's features.
model::TokenFeatures fused_logprobs_and_features(const at::Tensor& hidden, const at::Tensor& weight,
                                                 const at::Tensor& targets, const at::Tensor& segments,
                                                 int64_t num_segments, double temperature = 1.0,
                                                 int64_t chunk_bytes = int64_t{1} << 30);

// GRPO advantages of scores [N] grouped contiguously by offsets [G+1] (int64), in one launch. fp32 [N].
at::Tensor grouped_advantages(const at::Tensor& scores, const at::Tensor& offsets,
                              const kernels::GroupAdvantageOptions& options);

// G²RL's per-group cosine Gram (packed: group g's m×m block at Σ_{k<g} m_k²) and ν, in one launch.
// features [N, d], offsets [G+1] int64 (contiguous groups of at most kMaxSimilarityGroup), rewards [N].
std::pair<at::Tensor, at::Tensor> feature_similarity(const at::Tensor& features, const at::Tensor& offsets,
                                                     const at::Tensor& rewards, double eps = 1e-8);

}  // namespace introspect::gpu
