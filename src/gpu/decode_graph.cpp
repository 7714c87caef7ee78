#include "introspect/gpu/decode_graph.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

namespace introspect::gpu {

struct GraphedDecoder::Impl {
  const model::CausalLM& model;
  model::KVCache& cache;
  at::Tensor ids, positions, tokens;  // [B, 1], [B, 1], [B, max_len]: the graph's inputs and outputs
  at::cuda::CUDAGraph graph;

  Impl(const model::CausalLM& m, model::KVCache& c, int64_t batch) : model(m), cache(c) {
    TORCH_CHECK(batch >= 1 && batch <= cache.slots, "GraphedDecoder: batch must be in 1..", cache.slots);
    TORCH_CHECK(cache.k.front().is_cuda(), "GraphedDecoder: the KV cache must be on a GPU");
    const auto opts = torch::TensorOptions().dtype(torch::kLong).device(cache.k.front().device());
    ids = torch::zeros({batch, 1}, opts);
    positions = torch::full({batch, 1}, cache.max_len - 1, opts);  // the scratch slot while capturing
    tokens = torch::zeros({batch, cache.max_len}, opts);
    torch::NoGradGuard no_grad;
    const c10::cuda::CUDAGuard device_guard(cache.k.front().device());
    // Warm up on the capture stream first, so cuBLAS and the allocator have their workspaces before capture.
    auto stream = at::cuda::getStreamFromPool();
    stream.synchronize();
    at::cuda::getCurrentCUDAStream().synchronize();
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      for (int i = 0; i < 2; ++i) {
        step();
        positions.fill_(cache.max_len - 1);
      }
      stream.synchronize();
      graph.capture_begin();
      step();
      graph.capture_end();
    }
    stream.synchronize();
  }

  void step() {
    const auto out = model.forward_static_step(ids, positions, cache);
    const auto next = out.logits.select(1, 0).argmax(-1, /*keepdim=*/true);  // [B, 1]
    tokens.scatter_(1, positions, next);
    ids.copy_(next);
    positions.add_(1);
  }
};

GraphedDecoder::GraphedDecoder(const model::CausalLM& model, model::KVCache& cache, int64_t batch)
    : impl_(std::make_unique<Impl>(model, cache, batch)) {}
GraphedDecoder::~GraphedDecoder() = default;

at::Tensor GraphedDecoder::greedy(const at::Tensor& last_tokens, int64_t start, int64_t steps) {
  auto& s = *impl_;
  const int64_t batch = s.ids.size(0);
  TORCH_CHECK(last_tokens.numel() == batch, "GraphedDecoder::greedy: last_tokens must hold ", batch, " tokens");
  TORCH_CHECK(start >= 0 && steps >= 0 && start + steps <= s.cache.max_len - 1, "GraphedDecoder::greedy: positions ",
              start, "..", start + steps - 1, " do not fit the cache below its scratch slot ", s.cache.max_len - 1);
  const c10::cuda::CUDAGuard device_guard(s.ids.device());
  s.ids.copy_(last_tokens.reshape({batch, 1}));
  s.positions.fill_(start);
  for (int64_t i = 0; i < steps; ++i) s.graph.replay();
  return s.tokens.narrow(1, start, steps).clone();
}

}  // namespace introspect::gpu
