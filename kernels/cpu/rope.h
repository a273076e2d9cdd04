// Rotary position embedding (RoPE) in Hugging Face Llama's "rotate_half" convention:
// within a head of size D, element i < D/2 pairs with i + D/2, rotated by angle
// t * theta^(-2i/D) at position t. Applied in place to heads inside fused rows.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// table: (T, D/2, 2) = (cos, sin) of t * theta^(-2i/D), computed in double and rounded
// once. D must be even.
Status rope_table(float* table, int64_t T, int64_t D, float theta);

// x points at the first of n_heads consecutive heads (each D floats) in row (b, t);
// consecutive rows are row_stride (>= n_heads * D) floats apart; B*T rows with position
// t = row % T; table must hold at least T positions.
// inverse = false rotates by +angle (forward); inverse = true by -angle, which is the
// backward of the forward rotation (it is orthogonal), applied to the gradient.
Status rope_apply(float* x, const float* table, int64_t B, int64_t T, int64_t n_heads,
                  int64_t D, int64_t row_stride, bool inverse);

}  // namespace castor::kernels::cpu
