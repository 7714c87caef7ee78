// Kernel lab: each CUDA kernel against the plain LibTorch composition of the same math, side by side in one run.
// For each: a correctness check (max difference), time per call, peak extra memory, and achieved FLOP/s or
// bandwidth against the card's datasheet peak. Prints a markdown table; needs a GPU.
//   bench_kernel_lab [--tokens 16384] [--vocab 151936] [--hidden 2048] [--reps 5]
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "gpu_timing.h"
#include "introspect/algo/core_algos.h"
#include "introspect/gpu/ops.h"
#include "introspect/kernels/fused_logprob.h"

namespace gpu = introspect::gpu;
using introspect::bench::peak_extra_bytes;
using introspect::bench::time_ms;

namespace {

struct Row {
  std::string kernel, variant;
  double ms, max_diff;
  int64_t peak_bytes;
  std::string rate;
};

void print(const Row& r) {
  std::printf("| %s | %s | %.3f | %.1f | %.2e | %s |\n", r.kernel.c_str(), r.variant.c_str(), r.ms,
              r.peak_bytes / 1048576.0, r.max_diff, r.rate.c_str());
  std::fflush(stdout);
}

std::string rate(double amount, double ms, double peak, const char* unit) {
  char buf[96];
  const double per_s = amount / (ms * 1e-3);
  std::snprintf(buf, sizeof buf, "%.1f %s (%.0f%% of peak)", per_s / 1e12, unit, peak > 0 ? 100 * per_s / peak : 0.0);
  return buf;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// The composition verl and TRL run: full logits, upcast, log_softmax, gather, entropy from the probabilities.
std::pair<torch::Tensor, torch::Tensor> composed_logprob_entropy(const torch::Tensor& h, const torch::Tensor& w,
                                                                 const torch::Tensor& targets) {
  const auto logits = torch::matmul(h, w.t()).to(torch::kFloat);
  const auto ls = torch::log_softmax(logits, -1);
  const auto logp = ls.gather(1, targets.unsqueeze(1)).squeeze(1);
  const auto entropy = -(ls.exp() * ls).sum(-1);
  return {logp, entropy};
}

int64_t arg(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], name)) return std::stoll(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!gpu::cuda_usable(&why)) {
    std::fprintf(stderr, "bench_kernel_lab needs a GPU: %s\n", why.c_str());
    return 2;
  }
  const int64_t T = arg(argc, argv, "--tokens", 16384), V = arg(argc, argv, "--vocab", 151936),
                H = arg(argc, argv, "--hidden", 2048);
  const int reps = static_cast<int>(arg(argc, argv, "--reps", 5));
  const auto peaks = introspect::bench::device_peaks();
  std::printf("# kernel lab on %s: %lld tokens, vocab %lld, hidden %lld (bf16)\n\n", peaks.name.c_str(),
              static_cast<long long>(T), static_cast<long long>(V), static_cast<long long>(H));
  std::printf("| kernel | variant | ms | peak extra MiB | max diff vs other | rate |\n|---|---|---|---|---|---|\n");
  torch::manual_seed(0);
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  const auto h = torch::randn({T, H}, opts.dtype(torch::kBFloat16));
  const auto w = (torch::randn({V, H}, opts) * 0.02).to(torch::kBFloat16);
  const auto targets = torch::randint(V, {T}, opts.dtype(torch::kLong));
  const double gemm_flops = 2.0 * T * V * H;

  {  // 1. log-prob + entropy, forward (the old-log-prob pass)
    torch::NoGradGuard no_grad;
    const auto [lp_ref, ent_ref] = composed_logprob_entropy(h, w, targets);
    const auto [lp, ent] = gpu::fused_token_logprobs_entropy(h, w, targets);
    const double diff = std::max(max_diff(lp, lp_ref), max_diff(ent, ent_ref));
    auto run_ref = [&] { composed_logprob_entropy(h, w, targets); };
    auto run_fused = [&] { gpu::fused_token_logprobs_entropy(h, w, targets); };
    const double ms_ref = time_ms(run_ref, 1, reps), ms_fused = time_ms(run_fused, 1, reps);
    print({"logprob+entropy fwd", "LibTorch composition", ms_ref, diff, peak_extra_bytes(run_ref),
           rate(gemm_flops, ms_ref, peaks.bf16_flops, "TFLOP/s")});
    print({"logprob+entropy fwd", "fused (cuBLAS + row kernel)", ms_fused, diff, peak_extra_bytes(run_fused),
           rate(gemm_flops, ms_fused, peaks.bf16_flops, "TFLOP/s")});
    // The row kernel alone, as bandwidth: one fp32 read of the chunk's logits.
    const int64_t rows = std::min<int64_t>(T, (int64_t{1} << 30) / (V * 4));
    auto logits = torch::randn({rows, V}, opts);
    auto lse = torch::empty({rows}, opts), logp = torch::empty({rows}, opts), e = torch::empty({rows}, opts);
    const double ms_rows = time_ms([&] {
      introspect::kernels::logits_row_stats(logits.data_ptr<float>(), targets.data_ptr<int64_t>(), rows, V,
                                            lse.data_ptr<float>(), logp.data_ptr<float>(), e.data_ptr<float>(),
                                            at::cuda::getCurrentCUDAStream().stream());
    }, 2, reps);
    print({"row stats kernel", "one chunk", ms_rows, 0, 0, rate(4.0 * rows * V, ms_rows, peaks.hbm_bytes, "TB/s")});
  }

  {  // 2. forward + backward, gradients into hidden and weight
    const auto g = torch::randn({T}, opts), ge = torch::randn({T}, opts) * 0.01;
    auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
    auto run_ref = [&] {
      hr.mutable_grad() = torch::Tensor(), wr.mutable_grad() = torch::Tensor();
      auto [lp, ent] = composed_logprob_entropy(hr, wr, targets);
      ((lp * g).sum() + (ent * ge).sum()).backward();
    };
    auto run_fused = [&] {
      hr.mutable_grad() = torch::Tensor(), wr.mutable_grad() = torch::Tensor();
      auto [lp, ent] = gpu::fused_token_logprobs_entropy(hr, wr, targets);
      ((lp * g).sum() + (ent * ge).sum()).backward();
    };
    run_ref();
    const auto gh_ref = hr.grad().clone(), gw_ref = wr.grad().clone();
    run_fused();
    const double diff = std::max(max_diff(hr.grad(), gh_ref) / gh_ref.abs().max().item<double>(),
                                 max_diff(wr.grad(), gw_ref) / gw_ref.abs().max().item<double>());
    const double ms_ref = time_ms(run_ref, 1, reps), ms_fused = time_ms(run_fused, 1, reps);
    print({"logprob+entropy fwd+bwd", "LibTorch autograd", ms_ref, diff, peak_extra_bytes(run_ref),
           rate(3 * gemm_flops, ms_ref, peaks.bf16_flops, "TFLOP/s")});
    print({"logprob+entropy fwd+bwd", "fused (recompute per chunk)", ms_fused, diff, peak_extra_bytes(run_fused),
           rate(4 * gemm_flops, ms_fused, peaks.bf16_flops, "TFLOP/s")});
  }

  {  // 3. the G²RL old-log-prob pass: log-probs, entropy and Φ for 64 sequences
    torch::NoGradGuard no_grad;
    const int64_t S = 64;
    const auto seg = torch::arange(T, opts.dtype(torch::kLong)).div(T / S, "floor").clamp_max(S - 1);
    auto run_ref = [&] {
      const auto logits = torch::matmul(h, w.t()).to(torch::kFloat);
      const auto ls = torch::log_softmax(logits, -1);
      const auto logp = ls.gather(1, targets.unsqueeze(1)).squeeze(1);
      const auto probs = ls.exp();
      const auto entropy = -(probs * ls).sum(-1);
      auto residual = torch::zeros({S, V}, opts).index_add_(0, seg, probs).neg_();
      residual.index_put_({seg, targets}, torch::ones({T}, opts), true);
      const auto counts = torch::zeros({S}, opts).index_add_(0, seg, torch::ones({T}, opts));
      return std::make_tuple(logp, entropy, torch::matmul(residual / counts.unsqueeze(1), w.to(torch::kFloat)));
    };
    const auto [lp_ref, ent_ref, phi_ref] = run_ref();
    const auto got = gpu::fused_logprobs_and_features(h, w, targets, seg, S);
    const double diff = max_diff(got.features, phi_ref) / phi_ref.abs().max().item<double>();
    auto run_fused = [&] { gpu::fused_logprobs_and_features(h, w, targets, seg, S); };
    const double ms_ref = time_ms([&] { run_ref(); }, 1, reps), ms_fused = time_ms(run_fused, 1, reps);
    print({"logprob+entropy+Φ (G²RL)", "LibTorch composition", ms_ref, diff, peak_extra_bytes([&] { run_ref(); }),
           rate(gemm_flops, ms_ref, peaks.bf16_flops, "TFLOP/s")});
    print({"logprob+entropy+Φ (G²RL)", "fused + column sums", ms_fused, diff, peak_extra_bytes(run_fused),
           rate(gemm_flops, ms_fused, peaks.bf16_flops, "TFLOP/s")});
  }

  {  // 4. grouped advantage: 1M scores in groups of 16
    const int64_t n = 1 << 20, m = 16;
    const auto scores = (torch::rand({n}, opts) > 0.5).to(torch::kFloat);
    const auto ids = torch::arange(n, opts.dtype(torch::kLong)).div(m, "floor");
    const auto offsets = torch::arange(0, n + 1, m, opts.dtype(torch::kLong));
    introspect::kernels::GroupAdvantageOptions o;
    introspect::algo::AdvantageOptions ao;
    const double diff = max_diff(gpu::grouped_advantages(scores, offsets, o), introspect::algo::grpo_advantages(scores, ids, ao));
    auto run_ref = [&] { introspect::algo::grpo_advantages(scores, ids, ao); };
    auto run_kernel = [&] { gpu::grouped_advantages(scores, offsets, o); };
    const double ms_ref = time_ms(run_ref, 2, reps), ms_k = time_ms(run_kernel, 2, reps);
    const double bytes = 3.0 * 4 * n;  // two reads and one write of fp32 scores
    print({"grouped advantage", "LibTorch (algo::grpo_advantages)", ms_ref, diff, peak_extra_bytes(run_ref),
           rate(bytes, ms_ref, peaks.hbm_bytes, "TB/s")});
    print({"grouped advantage", "one launch", ms_k, diff, peak_extra_bytes(run_kernel),
           rate(bytes, ms_k, peaks.hbm_bytes, "TB/s")});
  }

  {  // 5. feature similarity: 512 groups of 16, d = hidden
    const int64_t G = 512, m = 16, n = G * m;
    const auto phi = torch::randn({n, H}, opts);
    const auto r = (torch::rand({n}, opts) > 0.5).to(torch::kFloat) * 2 - 1;
    const auto offsets = torch::arange(0, n + 1, m, torch::kLong);
    auto run_ref = [&] {  // batched: unit rows, bmm Gram, peer-softmax weights, ν
      const auto unit = phi / (phi.norm(2, 1, true) + 1e-8);
      const auto u = unit.view({G, m, H});
      const auto s = torch::bmm(u, u.transpose(1, 2));
      const auto e = r.exp().view({G, 1, m}) * (1 - torch::eye(m, opts)).unsqueeze(0);
      const auto wgt = e / (e.sum(-1, true) + 1e-8);
      return std::make_pair(s, (1 - (wgt * s.square()).sum(-1)).clamp_min(0).view({n}));
    };
    const auto [s_ref, nu_ref] = run_ref();
    const auto [gram, nu] = gpu::feature_similarity(phi, offsets, r);
    const double diff = std::max(max_diff(gram.view({G, m, m}), s_ref), max_diff(nu, nu_ref));
    auto run_kernel = [&] { gpu::feature_similarity(phi, offsets, r); };
    const double ms_ref = time_ms([&] { run_ref(); }, 2, reps), ms_k = time_ms(run_kernel, 2, reps);
    const double bytes = 4.0 * n * H;
    print({"feature similarity", "LibTorch batched (fp32 bmm)", ms_ref, diff, peak_extra_bytes([&] { run_ref(); }),
           rate(bytes, ms_ref, peaks.hbm_bytes, "TB/s")});
    print({"feature similarity", "one launch (fp64 sums)", ms_k, diff, peak_extra_bytes(run_kernel),
           rate(bytes, ms_k, peaks.hbm_bytes, "TB/s")});
  }
  return 0;
}
