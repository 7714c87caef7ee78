// Greedy decoding with one CUDA graph per step: LibTorch's eager decode loop is bound by per-operator CPU
// dispatch (thousands of operators a token), so the step model::CausalLM::forward_static_step is captured once
// and replayed, with its inputs (last token, position) and outputs living in fixed device buffers.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "introspect/model/decoder.h"

namespace introspect::gpu {

class GraphedDecoder {
 public:
  // Captures one greedy step of `model` over cache rows 0..batch-1. The cache's last position is the capture's
  // scratch slot, so decoding may use positions 0..max_len-2. model and cache must outlive this object.
  GraphedDecoder(const model::CausalLM& model, model::KVCache& cache, int64_t batch);
  ~GraphedDecoder();
  // Rows whose prompts fill cache positions 0..start-1 continue from last_tokens [batch] (the token at position
  // start): returns the next `steps` greedy tokens [batch, steps], one graph replay each.
  at::Tensor greedy(const at::Tensor& last_tokens, int64_t start, int64_t steps);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace introspect::gpu
