// Rotary position embedding (RoPE) on a CUDA stream, Hugging Face Llama's "rotate_half"
// convention; mirrors kernels/cpu/rope.h: within a head of size D, element i < D/2 pairs
// with i + D/2, rotated by angle t * theta^(-2i/D) at position t. The table is fp32 and
// built on the device in double (same formula as the CPU kernel, rounded once); the heads
// are T (float, bf16 or f16), rotated in place in fp32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// table: (T, D/2, 2) = (cos, sin) of t * theta^(-2i/D), computed in double and rounded
// once. D must be even. (`T` of the CPU header is `positions` here.)
Status rope_table(float* table, int64_t positions, int64_t D, float theta, cudaStream_t stream);

// x points at the first of n_heads consecutive heads (each D elements) in row (b, t);
// consecutive rows are row_stride (>= n_heads * D) elements apart; B*seq rows with
// position t = row % seq (`T` of the CPU header is `seq` here); table must hold at least
// seq positions. inverse = false rotates by +angle (forward); inverse = true by -angle,
// the backward of the forward rotation, applied to the gradient.
template <typename T>
Status rope_apply(T* x, const float* table, int64_t B, int64_t seq, int64_t n_heads, int64_t D, int64_t row_stride,
                  bool inverse, cudaStream_t stream);

}  // namespace castor::kernels::cuda
