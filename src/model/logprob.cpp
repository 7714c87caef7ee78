// Token log-probs through the LM head without a [tokens x vocab] fp32 tensor: forward and backward both work
// a chunk of rows at a time, and the backward recomputes each chunk's logits from hidden and weight.
#include <torch/torch.h>

#include "introspect/model/decoder.h"

namespace introspect::model {
namespace {

// Rows per chunk: `chunk` at most, and few enough that one [rows x vocab] fp32 block stays near 64 MB, so a
// 152k-token vocabulary works in cache-sized pieces instead of gigabyte temporaries.
int64_t rows_per_chunk(int64_t chunk, int64_t vocab) {
  constexpr int64_t kElements = int64_t{1} << 24;
  return std::max<int64_t>(1, std::min(chunk, kElements / std::max<int64_t>(vocab, 1)));
}

// Columns per tile of the entropy pass: one tile of a sequence's probability sum (16 KB) stays in L1 while the
// rows of that sequence stream past it.
constexpr int64_t kColumnTile = 4096;

// An AVX2 clone where the compiler and loader can pick one at load time (ifunc: x86-64 Linux); plain code elsewhere.
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define INTROSPECT_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef INTROSPECT_AVX2_CLONE
#define INTROSPECT_AVX2_CLONE
#endif

// kRows consecutive rows (row stride `vocab`) over columns [c0, c1): partial[q] = Σ p·logp of row q, and, with
// kSums, sums[v] += the rows' column sum. Several rows per sweep give the FMAs independent chains and read-modify-
// write the sequence's sums once per column instead of once per row. Sixteen running sums per row let the compiler
// vectorise the reduction without -ffast-math. Always inlined, so the caller's AVX2 clone covers it.
template <int kRows, bool kSums>
inline __attribute__((always_inline)) void entropy_rows(const float* __restrict__ p, const float* __restrict__ logp,
                                                        int64_t vocab, int64_t c0, int64_t c1,
                                                        float* __restrict__ sums, float* partial) {
  float acc[kRows][16] = {};
  int64_t v = c0;
  for (; v + 16 <= c1; v += 16) {
    for (int k = 0; k < 16; ++k) {
      float column = 0.f;
      for (int q = 0; q < kRows; ++q) {
        const float x = p[q * vocab + v + k];
        acc[q][k] += x * logp[q * vocab + v + k];
        column += x;
      }
      if constexpr (kSums) sums[v + k] += column;
    }
  }
  float total[kRows] = {};
  for (; v < c1; ++v) {
    float column = 0.f;
    for (int q = 0; q < kRows; ++q) {
      const float x = p[q * vocab + v];
      total[q] += x * logp[q * vocab + v];
      column += x;
    }
    if constexpr (kSums) sums[v] += column;
  }
  for (int q = 0; q < kRows; ++q) {
    for (float a : acc[q]) total[q] += a;
    partial[q] = total[q];
  }
}

// Rows [0, rows) of p and logp ([rows x vocab], row-major), over columns [c0, c1): partial[r] = Σ p·logp and, with
// kSums, sums[segment[r]] += p[r]. Rows go in runs of up to four (of one sequence, with kSums); the runs depend only
// on the segments, so results do not depend on the thread count.
template <bool kSums>
INTROSPECT_AVX2_CLONE void entropy_tile(const float* p, const float* logp, int64_t rows, int64_t vocab, int64_t c0,
                                        int64_t c1, const int64_t* segment, float* sums, float* partial) {
  for (int64_t r = 0; r < rows;) {
    int64_t run = 1;
    while (run < 4 && r + run < rows && (!kSums || segment[r + run] == segment[r])) ++run;
    const float *pr = p + r * vocab, *lr = logp + r * vocab;
    float* sr = kSums ? sums + segment[r] * vocab : nullptr;
    switch (run) {
      case 4: entropy_rows<4, kSums>(pr, lr, vocab, c0, c1, sr, partial + r); break;
      case 3: entropy_rows<3, kSums>(pr, lr, vocab, c0, c1, sr, partial + r); break;
      case 2: entropy_rows<2, kSums>(pr, lr, vocab, c0, c1, sr, partial + r); break;
      default: entropy_rows<1, kSums>(pr, lr, vocab, c0, c1, sr, partial + r);
    }
    r += run;
  }
}

// One chunk's row statistics from its logits [rows x vocab] fp32 (overwritten with log-probs): the log-sum-exp,
// log p(target) and the entropy. With `sums` ([segments x vocab] fp32), each row's probabilities are also added
// to its sequence's row, in the same read of the probabilities that gives the entropy (G²RL's p̄). Tiles of
// columns are fixed, so the result does not depend on the thread count.
struct ChunkStats {
  at::Tensor lse, logp, entropy;  // [rows]
};
ChunkStats chunk_stats(at::Tensor logits, const at::Tensor& targets, const int64_t* segment = nullptr,
                       float* sums = nullptr) {
  TORCH_CHECK(logits.is_cpu() && logits.scalar_type() == torch::kFloat && logits.is_contiguous(),
              "chunked log-probs: contiguous fp32 CPU logits expected (CUDA runs gpu::fused_token_logprobs_entropy)");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  ChunkStats out;
  out.lse = torch::logsumexp(logits, -1);
  const auto logp_all = logits.sub_(out.lse.unsqueeze(1));
  out.logp = logp_all.gather(1, targets.unsqueeze(1)).squeeze(1);
  const auto probs = logp_all.exp();
  const int64_t tiles = (vocab + kColumnTile - 1) / kColumnTile;
  auto partial = torch::empty({tiles, rows}, logits.options());
  const float *p = probs.data_ptr<float>(), *lp = logp_all.data_ptr<float>();
  float* part = partial.data_ptr<float>();
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c0 = t * kColumnTile, c1 = std::min(vocab, c0 + kColumnTile);
      if (sums) {
        entropy_tile<true>(p, lp, rows, vocab, c0, c1, segment, sums, part + t * rows);
      } else {
        entropy_tile<false>(p, lp, rows, vocab, c0, c1, nullptr, nullptr, part + t * rows);
      }
    }
  });
  out.entropy = partial.sum(0).neg_();
  return out;
}

// sums [S x V] times weight [V x H] for few rows S: a reduction over the long vocabulary axis, which one GEMM
// call runs at a fraction of the machine's speed. Instead, one batched GEMM over fixed vocabulary blocks (about 1.6x
// faster here), then the blocks' sum in block order.
at::Tensor sums_times_weight(const at::Tensor& sums, const at::Tensor& weight) {
  constexpr int64_t kBlock = 8192;
  const int64_t rows = sums.size(0), vocab = weight.size(0), hidden = weight.size(1);
  const int64_t blocks = vocab / kBlock, tail = vocab - blocks * kBlock;
  auto total = torch::mm(sums.narrow(1, blocks * kBlock, tail), weight.narrow(0, blocks * kBlock, tail));
  if (blocks == 0) return total;
  const auto partial = torch::bmm(sums.narrow(1, 0, blocks * kBlock).reshape({rows, blocks, kBlock}).transpose(0, 1),
                                  weight.narrow(0, 0, blocks * kBlock).reshape({blocks, kBlock, hidden}));
  for (int64_t b = 0; b < blocks; ++b) total.add_(partial[b]);
  return total;
}

// Outputs log p(target) and the entropy of softmax(logits / T) per row. The entropy reuses the chunk's
// probabilities; its gradient is computed only when a caller uses it.
struct ChunkedLogProb : public torch::autograd::Function<ChunkedLogProb> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor hidden,
                                                torch::Tensor weight, torch::Tensor targets, double temperature,
                                                int64_t chunk) {
    ctx->set_materialize_grads(false);
    const int64_t n = hidden.size(0);
    chunk = rows_per_chunk(chunk, weight.size(0));
    const auto w = weight.to(torch::kFloat);
    auto out = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    auto entropy = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    auto lse = torch::empty({n}, hidden.options().dtype(torch::kFloat));
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      auto logits = torch::matmul(hidden.narrow(0, s, len).to(torch::kFloat), w.t());
      if (temperature != 1.0) logits.div_(temperature);
      const auto stats = chunk_stats(logits, targets.narrow(0, s, len));
      lse.narrow(0, s, len).copy_(stats.lse);
      out.narrow(0, s, len).copy_(stats.logp);
      entropy.narrow(0, s, len).copy_(stats.entropy);
    }
    ctx->save_for_backward({hidden, weight, targets, lse, entropy});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk"] = chunk;
    return {out, entropy};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3], &entropy = saved[4];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const int64_t n = hidden.size(0);
    const bool want_logp = grad_out[0].defined(), want_entropy = grad_out[1].defined();
    if (!want_logp && !want_entropy) return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const auto g_logp = want_logp ? grad_out[0].to(torch::kFloat) : torch::zeros({n}, lse.options());
    const auto w = weight.to(torch::kFloat);
    auto grad_hidden = torch::empty(hidden.sizes(), hidden.options().dtype(torch::kFloat));
    auto grad_weight = torch::zeros(w.sizes(), w.options());
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      const auto h = hidden.narrow(0, s, len).to(torch::kFloat);
      auto logits = torch::matmul(h, w.t());
      if (temperature != 1.0) logits.div_(temperature);
      auto logp_all = logits.sub_(lse.narrow(0, s, len).unsqueeze(1));
      const auto g = g_logp.narrow(0, s, len).unsqueeze(1);
      // d logp(y) / d z = onehot(y) - p;  d H / d z = -p * (log p + H). Both then scale by 1/T.
      at::Tensor dlogits;
      if (want_entropy) {
        const auto p = logp_all.exp();
        const auto g_h = grad_out[1].to(torch::kFloat).narrow(0, s, len).unsqueeze(1);
        dlogits = logp_all.add_(entropy.narrow(0, s, len).unsqueeze(1)).mul_(g_h).add_(g).mul_(p).neg_();
      } else {
        dlogits = logp_all.exp_().mul_(-g);
      }
      dlogits.scatter_add_(1, targets.narrow(0, s, len).unsqueeze(1), g);
      if (temperature != 1.0) dlogits.div_(temperature);
      grad_hidden.narrow(0, s, len).copy_(torch::matmul(dlogits, w));
      grad_weight.addmm_(dlogits.t(), h);
    }
    return {grad_hidden.to(hidden.scalar_type()), grad_weight.to(weight.scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

void check_logprob_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                        double temperature, int64_t chunk) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "chunked_token_logprobs: hidden [N, H] and weight [V, H] expected");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "chunked_token_logprobs: targets [N] expected");
  TORCH_CHECK(temperature > 0 && chunk > 0, "chunked_token_logprobs: temperature and chunk must be positive");
}

}  // namespace

at::Tensor chunked_token_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                  double temperature, int64_t chunk) {
  check_logprob_args(hidden, weight, targets, temperature, chunk);
  return ChunkedLogProb::apply(hidden, weight, targets, temperature, chunk)[0];
}

std::pair<at::Tensor, at::Tensor> chunked_token_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                                                 const at::Tensor& targets, double temperature,
                                                                 int64_t chunk) {
  check_logprob_args(hidden, weight, targets, temperature, chunk);
  auto out = ChunkedLogProb::apply(hidden, weight, targets, temperature, chunk);
  return {out[0], out[1]};
}

TokenFeatures chunked_logprobs_and_features(const at::Tensor& hidden, const at::Tensor& weight,
                                            const at::Tensor& targets, const at::Tensor& segments,
                                            int64_t num_segments, double temperature, int64_t chunk) {
  check_logprob_args(hidden, weight, targets, temperature, chunk);
  TORCH_CHECK(segments.dim() == 1 && segments.size(0) == hidden.size(0), "features: segments [N] expected");
  TORCH_CHECK(segments.numel() == 0 || (segments.min().item<int64_t>() >= 0 &&
                                        segments.max().item<int64_t>() < num_segments),
              "features: segment ids must lie in [0, ", num_segments, ")");
  c10::NoGradGuard no_grad;
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  const auto w = weight.to(torch::kFloat);
  const auto f32 = hidden.options().dtype(torch::kFloat);
  chunk = rows_per_chunk(chunk, vocab);
  TokenFeatures out;
  out.logp = torch::empty({n}, f32);
  out.entropy = torch::empty({n}, f32);
  // Per sequence: the sum of the predicted distributions (fp32) and the histogram of realised tokens.
  auto prob_sum = torch::zeros({num_segments, vocab}, f32);
  const auto seg = segments.to(torch::kCPU).contiguous();
  const int64_t* seg_ids = seg.data_ptr<int64_t>();
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    auto logits = torch::matmul(hidden.narrow(0, s, len).to(torch::kFloat), w.t());
    if (temperature != 1.0) logits.div_(temperature);
    const auto stats = chunk_stats(logits, targets.narrow(0, s, len), seg_ids + s, prob_sum.data_ptr<float>());
    out.logp.narrow(0, s, len).copy_(stats.logp);
    out.entropy.narrow(0, s, len).copy_(stats.entropy);
  }
  // Φ = E_outᵀ(c − p̄): the histogram side gathers the realised tokens' rows; only p̄ needs the [S, V] x [V, H] GEMM.
  const auto counts = torch::zeros({num_segments}, f32).index_add_(0, segments, torch::ones({n}, f32));
  out.features = torch::zeros({num_segments, weight.size(1)}, f32)
                     .index_add_(0, segments, w.index_select(0, targets))
                     .sub_(sums_times_weight(prob_sum, w))
                     .div_(counts.clamp_min(1).unsqueeze(1));
  return out;
}

}  // namespace introspect::model
