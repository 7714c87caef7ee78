// LibTorch glue for the kernels: shape checks, buffers from the caching allocator, the current stream, and the
// autograd function of the fused LM-head pass.
#include "introspect/gpu/ops.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include "introspect/kernels/feature_similarity.h"
#include "introspect/kernels/fused_logprob.h"

namespace introspect::gpu {
namespace {

namespace k = kernels;

void* current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// Rows per chunk so that one fp32 [rows × vocab] block stays within chunk_bytes (and within a grid's y extent).
int64_t chunk_rows(int64_t chunk_bytes, int64_t vocab, int64_t rows) {
  const int64_t fit = chunk_bytes / (vocab * static_cast<int64_t>(sizeof(float)));
  return std::max<int64_t>(1, std::min({rows, fit, int64_t{65535}}));
}

k::GemmType gemm_type(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? k::GemmType::kBFloat16 : k::GemmType::kFloat32;
}

// [lo, hi) holds every element of the integer tensor t (one reduction and one host read).
void check_range(const at::Tensor& t, int64_t lo, int64_t hi, const char* what) {
  if (t.numel() == 0) return;
  const auto [min, max] = at::aminmax(t);
  const int64_t a = min.item<int64_t>(), b = max.item<int64_t>();
  TORCH_CHECK(a >= lo && b < hi, what, " must lie in [", lo, ", ", hi, "), found ", a, "..", b);
}

void check_logprob_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                        double temperature) {
  TORCH_CHECK(hidden.is_cuda() && weight.is_cuda() && targets.is_cuda(), "fused log-prob: CUDA tensors expected");
  TORCH_CHECK(hidden.device() == weight.device() && hidden.device() == targets.device(),
              "fused log-prob: hidden, weight and targets must be on one device");
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "fused log-prob: hidden [N, H] and weight [V, H] expected");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "fused log-prob: targets [N] expected");
  TORCH_CHECK(hidden.scalar_type() == at::kBFloat16 || hidden.scalar_type() == at::kFloat,
              "fused log-prob: hidden must be bf16 or fp32");
  TORCH_CHECK(temperature > 0, "fused log-prob: temperature must be positive");
  check_range(targets, 0, weight.size(0), "fused log-prob: targets");
}

// hidden contiguous in its own dtype, weight cast to it, targets int64.
struct Operands {
  at::Tensor hidden, weight, targets;
  k::GemmType type;
};
Operands operands(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets) {
  Operands o;
  o.hidden = hidden.contiguous();
  o.weight = weight.to(hidden.scalar_type()).contiguous();
  o.targets = targets.to(at::kLong).contiguous();
  o.type = gemm_type(o.hidden);
  return o;
}

struct ForwardPass {
  at::Tensor logp, entropy, lse;  // [N] fp32
  at::Tensor prob_sum;            // [segments, vocab] fp32 when segments were given
};

// The chunked forward: GEMM, row statistics and, given segments, the per-sequence softmax column sums.
ForwardPass forward_pass(const Operands& op, double temperature, int64_t chunk_bytes, const at::Tensor& segments = {},
                         int64_t num_segments = 0) {
  const int64_t n = op.hidden.size(0), vocab = op.weight.size(0), dim = op.hidden.size(1);
  const auto f32 = op.hidden.options().dtype(at::kFloat);
  ForwardPass out{torch::empty({n}, f32), torch::empty({n}, f32), torch::empty({n}, f32), {}};
  if (segments.defined()) out.prob_sum = torch::zeros({num_segments, vocab}, f32);
  const int64_t rows = chunk_rows(chunk_bytes, vocab, n);
  auto logits = torch::empty({rows, vocab}, f32);
  const float inv_t = static_cast<float>(1.0 / temperature);
  const size_t elem = op.hidden.element_size();
  for (int64_t s = 0; s < n; s += rows) {
    const int64_t len = std::min(rows, n - s);
    k::lm_head_logits(static_cast<const char*>(op.hidden.data_ptr()) + s * dim * elem, op.weight.data_ptr(), op.type,
                      len, vocab, dim, inv_t, logits.data_ptr<float>(), current_stream());
    k::logits_row_stats(logits.data_ptr<float>(), op.targets.data_ptr<int64_t>() + s, len, vocab,
                        out.lse.data_ptr<float>() + s, out.logp.data_ptr<float>() + s,
                        out.entropy.data_ptr<float>() + s, current_stream());
    if (segments.defined())
      k::softmax_column_sums(logits.data_ptr<float>(), out.lse.data_ptr<float>() + s,
                             segments.data_ptr<int64_t>() + s, len, vocab, out.prob_sum.data_ptr<float>(),
                             current_stream());
  }
  return out;
}

struct FusedLogProb : public torch::autograd::Function<FusedLogProb> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor hidden,
                                                torch::Tensor weight, torch::Tensor targets, double temperature,
                                                int64_t chunk_bytes) {
    ctx->set_materialize_grads(false);
    const auto pass = forward_pass(operands(hidden, weight, targets), temperature, chunk_bytes);
    ctx->save_for_backward({hidden, weight, targets, pass.lse, pass.entropy});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk_bytes"] = chunk_bytes;
    return {pass.logp, pass.entropy};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &lse = saved[3], &entropy = saved[4];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk_bytes = ctx->saved_data["chunk_bytes"].toInt();
    const bool want_logp = grad_out[0].defined(), want_entropy = grad_out[1].defined();
    if (!want_logp && !want_entropy) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const c10::cuda::CUDAGuard guard(saved[0].device());
    const auto op = operands(saved[0], saved[1], saved[2]);
    const int64_t n = op.hidden.size(0), vocab = op.weight.size(0), dim = op.hidden.size(1);
    const auto f32 = op.hidden.options().dtype(at::kFloat);
    const auto g_logp = want_logp ? grad_out[0].to(at::kFloat).contiguous() : torch::zeros({n}, f32);
    const auto g_entropy = want_entropy ? grad_out[1].to(at::kFloat).contiguous() : at::Tensor();
    auto grad_hidden = torch::empty({n, dim}, f32);
    auto grad_weight = torch::zeros({vocab, dim}, f32);
    const int64_t rows = chunk_rows(chunk_bytes, vocab, n);
    auto logits = torch::empty({rows, vocab}, f32);
    const bool bf16 = op.type == k::GemmType::kBFloat16;
    auto dlogits_bf16 = bf16 ? torch::empty({rows, vocab}, op.hidden.options()) : at::Tensor();
    const float inv_t = static_cast<float>(1.0 / temperature);
    const size_t elem = op.hidden.element_size();
    for (int64_t s = 0; s < n; s += rows) {
      const int64_t len = std::min(rows, n - s);
      const void* h = static_cast<const char*>(op.hidden.data_ptr()) + s * dim * elem;
      k::lm_head_logits(h, op.weight.data_ptr(), op.type, len, vocab, dim, inv_t, logits.data_ptr<float>(),
                        current_stream());
      k::logits_backward(logits.data_ptr<float>(), lse.data_ptr<float>() + s, entropy.data_ptr<float>() + s,
                         op.targets.data_ptr<int64_t>() + s, g_logp.data_ptr<float>() + s,
                         want_entropy ? g_entropy.data_ptr<float>() + s : nullptr, len, vocab, inv_t,
                         bf16 ? dlogits_bf16.data_ptr() : nullptr, current_stream());
      k::lm_head_backward(bf16 ? dlogits_bf16.data_ptr() : logits.data_ptr(), h, op.weight.data_ptr(), op.type, len,
                          vocab, dim, grad_hidden.data_ptr<float>() + s * dim, grad_weight.data_ptr<float>(),
                          current_stream());
    }
    return {grad_hidden.to(saved[0].scalar_type()), grad_weight.to(saved[1].scalar_type()), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool cuda_usable(std::string* why) {
  if (torch::cuda::is_available() && torch::cuda::device_count() > 0) return true;
  if (why) *why = "LibTorch sees no CUDA device";
  return false;
}

std::pair<at::Tensor, at::Tensor> fused_token_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                                               const at::Tensor& targets, double temperature,
                                                               int64_t chunk_bytes) {
  check_logprob_args(hidden, weight, targets, temperature);
  const c10::cuda::CUDAGuard guard(hidden.device());
  auto out = FusedLogProb::apply(hidden, weight, targets, temperature, chunk_bytes);
  return {out[0], out[1]};
}

model::TokenFeatures fused_logprobs_and_features(const at::Tensor& hidden, const at::Tensor& weight,
                                                 const at::Tensor& targets, const at::Tensor& segments,
                                                 int64_t num_segments, double temperature, int64_t chunk_bytes) {
  check_logprob_args(hidden, weight, targets, temperature);
  TORCH_CHECK(segments.dim() == 1 && segments.size(0) == hidden.size(0), "features: segments [N] expected");
  check_range(segments, -1, num_segments, "features: segments");
  const c10::cuda::CUDAGuard guard(hidden.device());
  c10::NoGradGuard no_grad;
  const auto op = operands(hidden, weight, targets);
  const auto seg = segments.to(hidden.device(), at::kLong).contiguous();
  const auto f32 = hidden.options().dtype(at::kFloat);
  auto pass = forward_pass(op, temperature, chunk_bytes, seg, num_segments);
  model::TokenFeatures out;
  out.logp = pass.logp;
  out.entropy = pass.entropy;
  // Φ_s = Wᵀ (c_s − p̄_s), as the CPU path: histogram minus summed probabilities, over the token count.
  // Rows with a negative segment (masked out) count nowhere, as in the column-sum kernel.
  const auto kept = (seg >= 0).nonzero().squeeze(1);
  const auto kept_seg = seg.index_select(0, kept), kept_targets = op.targets.index_select(0, kept);
  const auto ones = torch::ones({kept.size(0)}, f32);
  auto residual = pass.prob_sum.neg_();
  residual.index_put_({kept_seg, kept_targets}, ones, /*accumulate=*/true);
  const auto counts = torch::zeros({num_segments}, f32).index_add_(0, kept_seg, ones);
  residual.div_(counts.clamp_min(1).unsqueeze(1));
  out.features = torch::matmul(residual, weight.to(at::kFloat));
  return out;
}

at::Tensor grouped_advantages(const at::Tensor& scores, const at::Tensor& offsets,
                              const kernels::GroupAdvantageOptions& options) {
  TORCH_CHECK(scores.is_cuda() && scores.dim() == 1, "grouped_advantages: CUDA scores [N] expected");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1, "grouped_advantages: offsets [G+1] expected");
  const c10::cuda::CUDAGuard guard(scores.device());
  const auto s = scores.to(at::kFloat).contiguous();
  const auto off = offsets.to(scores.device(), at::kLong).contiguous();
  // Offsets must rise from 0 to N: a group past the end would read and write out of bounds.
  auto ok = (off[0] == 0) & (off[-1] == s.size(0));
  if (off.size(0) > 1) ok &= (off.narrow(0, 1, off.size(0) - 1) >= off.narrow(0, 0, off.size(0) - 1)).all();
  TORCH_CHECK(ok.item<bool>(), "grouped_advantages: offsets must rise from 0 to N = ", s.size(0));  // one host read
  auto out = torch::empty_like(s);
  k::grouped_advantage(s.data_ptr<float>(), off.data_ptr<int64_t>(), off.size(0) - 1, out.data_ptr<float>(), options,
                       current_stream());
  return out;
}

std::pair<at::Tensor, at::Tensor> feature_similarity(const at::Tensor& features, const at::Tensor& offsets,
                                                     const at::Tensor& rewards, double eps) {
  TORCH_CHECK(features.is_cuda() && features.dim() == 2, "feature_similarity: CUDA features [N, d] expected");
  TORCH_CHECK(rewards.dim() == 1 && rewards.size(0) == features.size(0), "feature_similarity: rewards [N] expected");
  const auto off_cpu = offsets.to(at::kCPU, at::kLong).contiguous();
  const int64_t groups = off_cpu.size(0) - 1;
  TORCH_CHECK(groups >= 0, "feature_similarity: offsets [G+1] expected");
  const auto sizes = off_cpu.narrow(0, 1, groups) - off_cpu.narrow(0, 0, groups);
  TORCH_CHECK(off_cpu[0].item<int64_t>() == 0 && off_cpu[groups].item<int64_t>() == features.size(0) &&
                  (groups == 0 || sizes.min().item<int64_t>() >= 0),
              "feature_similarity: offsets must rise from 0 to N = ", features.size(0));
  const c10::cuda::CUDAGuard guard(features.device());
  TORCH_CHECK(groups == 0 || sizes.max().item<int64_t>() <= k::kMaxSimilarityGroup, "feature_similarity: a group has more than ",
              k::kMaxSimilarityGroup, " rows");
  auto gram_offsets = torch::zeros({groups + 1}, off_cpu.options());
  if (groups > 0) gram_offsets.narrow(0, 1, groups).copy_((sizes * sizes).cumsum(0));
  const int64_t gram_size = gram_offsets[groups].item<int64_t>();
  const auto f = features.to(at::kFloat).contiguous();
  const auto r = rewards.to(features.device(), at::kFloat).contiguous();
  const auto off = off_cpu.to(features.device()), goff = gram_offsets.to(features.device());
  auto gram = torch::empty({gram_size}, f.options());
  auto nu = torch::empty({f.size(0)}, f.options());
  k::feature_similarity(f.data_ptr<float>(), off.data_ptr<int64_t>(), goff.data_ptr<int64_t>(), groups, f.size(1),
                        r.data_ptr<float>(), eps, gram.data_ptr<float>(), nu.data_ptr<float>(), current_stream());
  return {gram, nu};
}

}  // namespace introspect::gpu
