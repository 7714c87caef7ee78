// G²RL's groupwise cosine Gram of the sequence features Φ and the novelty ν (spec §3, eqs. 9–11) for many
// groups in one launch, and the CPU twin. Plain pointers and a stream; statistics in fp64 as g2rl::novelty.
#pragma once

#include <cstdint>

namespace introspect::kernels {

// Largest group one launch handles (the block keeps the group's norms and exp(r) in shared memory).
constexpr int64_t kMaxSimilarityGroup = 1024;

// features [N, dim] fp32 row-major with each group's rows contiguous; offsets [groups + 1] int64; rewards [N].
// Writes, for group g with m = offsets[g+1] - offsets[g] rows, its m×m Gram S_ij = Φ̂_i·Φ̂_j (Φ̂ = Φ/(‖Φ‖+eps))
// row-major at gram + gram_offsets[g], where gram_offsets[g] = Σ_{k<g} m_k² (the caller computes them), and
// ν_i = max(1 − Σ_{j≠i} w_ij S_ij², 0) with w_ij = exp(r_j) / (Σ_{k≠i} exp(r_k) + eps). A lone row gets ν = 1.
void feature_similarity(const float* features, const int64_t* offsets, const int64_t* gram_offsets, int64_t groups,
                        int64_t dim, const float* rewards, double eps, float* gram, float* nu, void* stream);
void feature_similarity_reference(const float* features, const int64_t* offsets, const int64_t* gram_offsets,
                                  int64_t groups, int64_t dim, const float* rewards, double eps, float* gram,
                                  float* nu);

}  // namespace introspect::kernels
