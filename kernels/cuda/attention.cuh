// Fused causal grouped-query attention on a CUDA stream, flash style: keys are visited in
// tiles with an online softmax, so no (T x T) matrix is ever stored. Same layouts, mask
// and results as kernels/cpu/attention.h (its reference): qkv (B, T, (H + 2*KVH) * D),
// out (B, T, H*D), lse (B, H, T) fp32, scale 1/sqrt(D), query t attends keys
// [clamp(key_begin[b*T + t], 0, t), t]. Head dims up to 128 (kNotSupported above);
// bf16 and f16 with D a multiple of 16 run on tensor cores (WMMA), everything else on a
// scalar path.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// Largest head dimension the kernels take.
inline constexpr int64_t kAttentionMaxHeadDim = 128;

// Bytes of device scratch attention_backward needs (delta = rowsum(dO * O), B*H*T floats);
// attention_forward needs none. 0 for an invalid shape.
size_t attention_scratch_bytes(const cpu::AttentionShape& s);

// out = softmax(scale Q K^T + causal mask) V per head, lse its log-sum-exp (both =).
// scratch / scratch_bytes are not used (may be null / 0); they keep the CPU argument order.
// kInvalidArgument: bad shape or null pointer; kNotSupported: D > 128.
template <typename T>
Status attention_forward(T* out, float* lse, const T* qkv, const cpu::AttentionShape& s, void* scratch,
                         size_t scratch_bytes, const int32_t* key_begin, cudaStream_t stream);

// dqkv (=, qkv layout) from dout, the forward's qkv, out and lse. Deterministic: dK/dV of a
// kv head are summed over its query heads inside one block, dQ by a second pass over key
// tiles (no atomics). scratch: at least attention_scratch_bytes(s) bytes of device memory.
template <typename T>
Status attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                          const cpu::AttentionShape& s, void* scratch, size_t scratch_bytes, const int32_t* key_begin,
                          cudaStream_t stream);

// The forward engine with arbitrary strides, shared by attention_forward and
// attention_decode (kv_attention.cuh). B sequences of `rows` query rows; query row i sits at
// absolute position past + i and attends keys [clamp(key_begin[b*rows + i], 0, past + i),
// past + i] of its sequence. Head h of a row sits at columns h*D of q and out, kv head j at
// columns j*D of k and v; *_seq are the element strides between sequences.
template <typename T>
struct AttentionRows {
  T* out;
  int64_t ldo, out_seq;
  float* lse;  // (B, H, rows) or null
  const T* q;
  int64_t ldq, q_seq;
  const T* k;
  const T* v;
  int64_t ldkv, kv_seq;
  const int32_t* key_begin;  // (B, rows) or null
  int64_t B, rows, past, H, KVH, D;
};

// kInvalidArgument: a non-positive size, H % KVH != 0, a stride shorter than its heads, a
// null pointer or sizes past int range; kNotSupported: D > 128 or a grid too large.
template <typename T>
Status attention_rows(const AttentionRows<T>& a, cudaStream_t stream);

}  // namespace castor::kernels::cuda
