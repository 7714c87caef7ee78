// The LM-head log-prob pass, one chunk of rows at a time: cuBLAS writes the chunk's fp32 logits, then
//  - logits_row_stats: one block per row, an online (max, Σe, Σe·z) over the vocabulary in a single read, for
//    the log-sum-exp, the target's log-prob and the entropy;
//  - softmax_column_sums: each thread owns a column and walks a slab of rows, summing exp(z − lse) per segment
//    (G²RL's p̄) and flushing with one atomicAdd per segment run;
//  - logits_backward: elementwise d loss / d logits, in place, with an optional bf16 copy for the GEMMs.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>
#include <map>

#include "cuda_check.h"
#include "introspect/kernels/fused_logprob.h"

namespace introspect::kernels {
namespace {

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(status)));
}

// One handle per thread, created on first use and never destroyed: destroying it from a static destructor can
// run after the CUDA context is gone.
cublasHandle_t cublas_for(void* stream) {
  thread_local std::map<int, cublasHandle_t> handles;  // a handle belongs to the device current at its creation
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto& handle = handles[device];
  if (!handle) check_cublas(cublasCreate(&handle), "cublasCreate");
  check_cublas(cublasSetStream(handle, static_cast<cudaStream_t>(stream)), "cublasSetStream");
  return handle;
}

cudaDataType_t cuda_type(GemmType t) { return t == GemmType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F; }

// Row-major C [m_rows, n_cols] = alpha · op(A) · op(B) + beta · C, written as cuBLAS's column-major Cᵀ = op(B)ᵀ op(A)ᵀ.
void gemm_row_major(cublasHandle_t h, bool trans_a, bool trans_b, int64_t m_rows, int64_t n_cols, int64_t k,
                    float alpha, const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
                    GemmType type, const char* what) {
  check_cublas(cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            static_cast<int>(n_cols), static_cast<int>(m_rows), static_cast<int>(k), &alpha, b,
                            cuda_type(type), static_cast<int>(ldb), a, cuda_type(type), static_cast<int>(lda), &beta,
                            c, CUDA_R_32F, static_cast<int>(n_cols), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               what);
}

// dot is taken relative to the running max, so the entropy log(sum) − dot/sum never subtracts two numbers of
// the logits' size (a peaked row's entropy of 1e-6 stays exact instead of drowning in the lse's rounding).
struct SoftmaxState {
  float max, sum, dot;  // max z, Σ exp(z − max), Σ exp(z − max)·(z − max)
};

__device__ SoftmaxState rebase(SoftmaxState a, float m) {  // the same sums relative to a larger max m
  const float scale = expf(a.max - m);
  return {m, a.sum * scale, scale * (a.dot + a.sum * (a.max - m))};
}

__device__ SoftmaxState combine(SoftmaxState a, SoftmaxState b) {
  if (a.max == -INFINITY) return b;
  if (b.max == -INFINITY) return a;
  const float m = fmaxf(a.max, b.max);
  const SoftmaxState ra = rebase(a, m), rb = rebase(b, m);
  return {m, ra.sum + rb.sum, ra.dot + rb.dot};
}

__device__ SoftmaxState warp_combine(SoftmaxState s) {
  for (int offset = 16; offset > 0; offset /= 2) {
    SoftmaxState o{__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset),
                   __shfl_xor_sync(0xffffffffu, s.dot, offset)};
    s = combine(s, o);
  }
  return s;
}

constexpr int kRowThreads = 512;

__global__ void row_stats_kernel(const float* __restrict__ logits, const int64_t* __restrict__ targets, int64_t vocab,
                                 float* __restrict__ lse, float* __restrict__ logp, float* __restrict__ entropy) {
  const int64_t r = blockIdx.x;
  const float* z = logits + r * vocab;
  SoftmaxState s{-INFINITY, 0.f, 0.f};
  for (int64_t v = threadIdx.x; v < vocab; v += kRowThreads) {
    const float x = z[v];
    if (x > s.max) {
      s = s.max == -INFINITY ? SoftmaxState{x, 0.f, 0.f} : rebase(s, x);
      s.sum += 1.f;  // the new max itself: exp(0) to sum, exp(0)·0 to dot
    } else {
      const float d = x - s.max, e = expf(d);
      s.sum += e;
      s.dot += e * d;
    }
  }
  s = warp_combine(s);
  __shared__ SoftmaxState partial[kRowThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kRowThreads / 32 ? partial[lane] : SoftmaxState{-INFINITY, 0.f, 0.f};
    s = warp_combine(s);
    if (lane == 0) {
      const float l = s.max + logf(s.sum);
      lse[r] = l;
      logp[r] = z[targets[r]] - l;
      entropy[r] = logf(s.sum) - s.dot / s.sum;
    }
  }
}

constexpr int kColumnThreads = 256, kRowsPerSlab = 64;

__global__ void column_sums_kernel(const float* __restrict__ logits, const float* __restrict__ lse,
                                   const int64_t* __restrict__ segment, int64_t rows, int64_t vocab,
                                   float* __restrict__ prob_sum) {
  const int64_t v = static_cast<int64_t>(blockIdx.x) * kColumnThreads + threadIdx.x;
  if (v >= vocab) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kRowsPerSlab;
  const int64_t r1 = min(rows, r0 + kRowsPerSlab);
  int64_t current = -1;
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t seg = segment[r];
    if (seg < 0) continue;
    if (seg != current) {
      if (current >= 0) atomicAdd(prob_sum + current * vocab + v, acc);
      current = seg;
      acc = 0.f;
    }
    acc += expf(logits[r * vocab + v] - lse[r]);
  }
  if (current >= 0) atomicAdd(prob_sum + current * vocab + v, acc);
}

constexpr int kBackwardThreads = 256;

__global__ void backward_kernel(float* __restrict__ logits, const float* __restrict__ lse,
                                const float* __restrict__ entropy, const int64_t* __restrict__ targets,
                                const float* __restrict__ grad_logp, const float* __restrict__ grad_entropy,
                                int64_t rows, int64_t vocab, float inv_temperature,
                                __nv_bfloat16* __restrict__ out_bf16) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float l = lse[r], g = grad_logp[r], ge = grad_entropy ? grad_entropy[r] : 0.f, h = entropy[r];
    const int64_t target = targets[r];
    float* z = logits + r * vocab;
    for (int64_t v = static_cast<int64_t>(blockIdx.x) * kBackwardThreads + threadIdx.x; v < vocab;
         v += static_cast<int64_t>(gridDim.x) * kBackwardThreads) {
      const float lp = z[v] - l, p = expf(lp);
      float d = g * ((v == target ? 1.f : 0.f) - p);
      if (grad_entropy) d -= ge * p * (lp + h);
      d *= inv_temperature;
      z[v] = d;
      if (out_bf16) out_bf16[r * vocab + v] = __float2bfloat16(d);
    }
  }
}

}  // namespace

void lm_head_logits(const void* hidden, const void* weight, GemmType type, int64_t rows, int64_t vocab, int64_t dim,
                    float inv_temperature, float* logits, void* stream) {
  if (rows <= 0) return;
  // logits [rows, vocab] = hidden [rows, dim] · weightᵀ
  gemm_row_major(cublas_for(stream), false, true, rows, vocab, dim, inv_temperature, hidden, dim, weight, dim, 0.f,
                 logits, type, "lm_head_logits GEMM");
}

void lm_head_backward(const void* dlogits, const void* hidden, const void* weight, GemmType type, int64_t rows,
                      int64_t vocab, int64_t dim, float* grad_hidden, float* grad_weight, void* stream) {
  if (rows <= 0) return;
  const auto h = cublas_for(stream);
  // grad_hidden [rows, dim] = dlogits [rows, vocab] · weight [vocab, dim]
  gemm_row_major(h, false, false, rows, dim, vocab, 1.f, dlogits, vocab, weight, dim, 0.f, grad_hidden, type,
                 "lm_head_backward grad_hidden GEMM");
  // grad_weight [vocab, dim] += dlogitsᵀ [vocab, rows] · hidden [rows, dim]
  gemm_row_major(h, true, false, vocab, dim, rows, 1.f, dlogits, vocab, hidden, dim, 1.f, grad_weight, type,
                 "lm_head_backward grad_weight GEMM");
}

void logits_row_stats(const float* logits, const int64_t* targets, int64_t rows, int64_t vocab, float* lse,
                      float* logp, float* entropy, void* stream) {
  if (rows <= 0) return;
  row_stats_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, targets, vocab, lse, logp, entropy);
  check_launch("row_stats_kernel");
}

void softmax_column_sums(const float* logits, const float* lse, const int64_t* segment, int64_t rows, int64_t vocab,
                         float* prob_sum, void* stream) {
  if (rows <= 0) return;
  if ((rows + kRowsPerSlab - 1) / kRowsPerSlab > 65535)
    throw std::invalid_argument("softmax_column_sums: at most 65535 slabs of 64 rows per call");
  const dim3 grid(static_cast<unsigned>((vocab + kColumnThreads - 1) / kColumnThreads),
                  static_cast<unsigned>((rows + kRowsPerSlab - 1) / kRowsPerSlab));
  column_sums_kernel<<<grid, kColumnThreads, 0, static_cast<cudaStream_t>(stream)>>>(logits, lse, segment, rows,
                                                                                     vocab, prob_sum);
  check_launch("column_sums_kernel");
}

void logits_backward(float* logits, const float* lse, const float* entropy, const int64_t* targets,
                     const float* grad_logp, const float* grad_entropy, int64_t rows, int64_t vocab,
                     float inv_temperature, void* dlogits_bf16, void* stream) {
  if (rows <= 0) return;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((vocab + kBackwardThreads - 1) / kBackwardThreads, 64)),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  backward_kernel<<<grid, kBackwardThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, lse, entropy, targets, grad_logp, grad_entropy, rows, vocab, inv_temperature,
      static_cast<__nv_bfloat16*>(dlogits_bf16));
  check_launch("backward_kernel");
}

}  // namespace introspect::kernels
