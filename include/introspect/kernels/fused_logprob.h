// The LM-head log-prob pass in pieces that never hold [tokens × vocab]: the caller feeds one chunk of rows at a
// time through a cuBLAS GEMM into an fp32 logits buffer [rows × vocab], then the kernels below read it once for
// each row's log-sum-exp, the target's log-prob and the entropy, once more for G²RL's per-sequence softmax column
// sums, and in the backward turn it into d loss / d logits in place. Each has a CPU twin on host pointers.
// Temperature T: logits are z = h·Wᵀ / T (folded into the GEMM's alpha).
#pragma once

#include <cstdint>

namespace introspect::kernels {

enum class GemmType { kFloat32, kBFloat16 };

// logits [rows, vocab] fp32 = inv_temperature · hidden [rows, dim] · weight [vocab, dim]ᵀ (both `type`,
// row-major), fp32 accumulation (no TF32).
void lm_head_logits(const void* hidden, const void* weight, GemmType type, int64_t rows, int64_t vocab, int64_t dim,
                    float inv_temperature, float* logits, void* stream);
// grad_hidden [rows, dim] fp32 = dlogits [rows, vocab] · weight; grad_weight [vocab, dim] fp32 += dlogitsᵀ · hidden.
// dlogits, hidden and weight are all `type`.
void lm_head_backward(const void* dlogits, const void* hidden, const void* weight, GemmType type, int64_t rows,
                      int64_t vocab, int64_t dim, float* grad_hidden, float* grad_weight, void* stream);

// Per row r of logits: lse[r], logp[r] = z[r, targets[r]] − lse[r], entropy[r] = −Σ p log p.
void logits_row_stats(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* lse,
                      float* logp, float* entropy, void* stream);
void logits_row_stats_reference(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* lse,
                                float* logp, float* entropy);

// prob_sum [segments, vocab] += softmax rows: prob_sum[segment[r], v] += exp(z[r, v] − lse[r]); rows whose
// segment is negative are skipped. Rows of one segment may be anywhere, but contiguous runs are cheapest.
// Targets and segment ids are not range-checked here (gpu::ops checks them): callers keep them in range.
void softmax_column_sums(const float* logits, const float* lse, const int64_t* segment, int64_t rows, int64_t vocab,
                         float* prob_sum, void* stream);
void softmax_column_sums_reference(const float* logits, const float* lse, const int64_t* segment, int64_t rows,
                                   int64_t vocab, float* prob_sum);

// In place, logits → d loss / d (h·Wᵀ) for loss = Σ_r g_logp[r]·logp[r] + g_entropy[r]·entropy[r]:
//   (g_logp·(onehot(target) − p) − g_entropy·p·(log p + H)) / T.
// grad_entropy may be null (no entropy term). When dlogits_bf16 is non-null the result is also written there
// as bf16 (the operand of a bf16 backward GEMM).
void logits_backward(float* logits, const float* lse, const float* entropy, const int64_t* targets,
                     const float* grad_logp, const float* grad_entropy, int64_t rows, int64_t vocab,
                     float inv_temperature, void* dlogits_bf16, void* stream);
void logits_backward_reference(float* logits, const float* lse, const float* entropy, const int64_t* targets,
                               const float* grad_logp, const float* grad_entropy, int64_t rows, int64_t vocab,
                               float inv_temperature);

}  // namespace introspect::kernels
