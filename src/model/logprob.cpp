// Token log-probs through the LM head without a [tokens x vocab] fp32 tensor: forward and backward both work
// a chunk of rows at a time, and the backward recomputes each chunk's logits from hidden and weight.
#include <torch/torch.h>

#include "introspect/model/decoder.h"

namespace introspect::model {
namespace {

struct ChunkedLogProb : public torch::autograd::Function<ChunkedLogProb> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor hidden, torch::Tensor weight,
                               torch::Tensor targets, double temperature, int64_t chunk) {
    const int64_t n = hidden.size(0);
    const auto w = weight.to(torch::kFloat);
    auto out = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    auto lse = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      const auto logits = torch::matmul(hidden.narrow(0, s, len).to(torch::kFloat), w.t()) / temperature;
      const auto l = torch::logsumexp(logits, -1);
      lse.narrow(0, s, len).copy_(l);
      out.narrow(0, s, len).copy_(logits.gather(1, targets.narrow(0, s, len).unsqueeze(1)).squeeze(1) - l);
    }
    ctx->save_for_backward({hidden, weight, targets, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk"] = chunk;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto g = grad_out[0].to(torch::kFloat);
    const auto w = weight.to(torch::kFloat);
    const int64_t n = hidden.size(0);
    auto grad_hidden = torch::empty(hidden.sizes(), hidden.options().dtype(torch::kFloat));
    auto grad_weight = torch::zeros(w.sizes(), w.options());
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      const auto h = hidden.narrow(0, s, len).to(torch::kFloat);
      const auto logits = torch::matmul(h, w.t()) / temperature;
      // d logp / d logits = onehot(target) - softmax; scaled by the incoming gradient and 1/T.
      auto dlogits = -torch::exp(logits - lse.narrow(0, s, len).unsqueeze(1));
      dlogits.scatter_add_(1, targets.narrow(0, s, len).unsqueeze(1), torch::ones({len, 1}, dlogits.options()));
      dlogits.mul_(g.narrow(0, s, len).unsqueeze(1) / temperature);
      grad_hidden.narrow(0, s, len).copy_(torch::matmul(dlogits, w));
      grad_weight.addmm_(dlogits.t(), h);
    }
    return {grad_hidden.to(hidden.scalar_type()), grad_weight.to(weight.scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

at::Tensor chunked_token_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                  double temperature, int64_t chunk) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "chunked_token_logprobs: hidden [N, H] and weight [V, H] expected");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "chunked_token_logprobs: targets [N] expected");
  TORCH_CHECK(temperature > 0 && chunk > 0, "chunked_token_logprobs: temperature and chunk must be positive");
  return ChunkedLogProb::apply(hidden, weight, targets, temperature, chunk);
}

}  // namespace introspect::model
