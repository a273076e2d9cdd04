// Generation with a KV cache on a CUDA stream: attention of n new query rows against a
// key/value cache (attention_decode) and the matrix-vector product that runs one row
// through the LM head (matvec). Same layouts, mask and results as kernels/cpu/kv_attention.h
// (its reference); attention_decode runs the kernels of attention_forward (attention.cuh),
// so a prefill plus decode steps reproduce the full-sequence forward up to rounding.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/kv_attention.h"
#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// Bytes of scratch attention_decode needs: none (0); kept so callers size buffers as on the CPU.
size_t attention_decode_scratch_bytes(const cpu::KvAttentionShape& s);

// out (n, ldo): query head h at columns [h*D, h*D + D); q (n, ldq) query head h at h*D;
// k, v (past + n, ldkv) kv head j at j*D; key_begin (n absolute key positions) optional.
// scratch / scratch_bytes are not used (may be null / 0). kInvalidArgument on a bad shape,
// stride or pointer (as the CPU kernel); kNotSupported for D > 128.
template <typename T>
Status attention_decode(T* out, int64_t ldo, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                        const cpu::KvAttentionShape& s, void* scratch, size_t scratch_bytes, const int32_t* key_begin,
                        cudaStream_t stream);

// y (M, fp32: logits for sampling) = A x for A (M x K, row stride lda >= K) and x (K), both
// T; fp32 accumulation, one warp per row (deterministic). kInvalidArgument on a negative
// size, short stride or null pointer (M or K 0: y = 0), as the CPU kernel.
template <typename T>
Status matvec(float* y, const T* A, int64_t M, int64_t K, int64_t lda, const T* x, cudaStream_t stream);

}  // namespace castor::kernels::cuda
