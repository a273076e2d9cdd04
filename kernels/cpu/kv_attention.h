// Kernels of generation with a KV cache: attention of new query rows against the cache,
// and the matrix-vector product that runs one row through a large matrix (the LM head).
//
// attention_decode: attention of new query rows against a key/value cache.
// One sequence: the cache holds the post-RoPE keys and values of `past` earlier positions
// followed by those of the n new positions (past + n rows of k and v); the n new queries
// sit at absolute positions past .. past + n - 1. Query i attends to keys
// [first, past + i] (causal inside the new rows), first = key_begin[i] clamped to
// [0, past + i] when key_begin is given, else 0 (docs/model.md "Attention mask").
// Grouped-query heads: query head h reads kv head h / (H / KVH). The math is that of
// attention_forward (scale 1/sqrt(D), softmax, P V) on the same rows, so a prefill plus
// decode steps reproduce the full-sequence forward up to float rounding.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

struct KvAttentionShape {
  int64_t past;  // cached positions before the new rows
  int64_t n;     // new query rows (>= 1)
  int64_t H, KVH, D;
};

// Floats of scratch attention_decode needs with `threads` threads.
size_t attention_decode_scratch_floats(const KvAttentionShape& s, int threads);

// out: (n, ldo) floats, query head h at columns [h*D, h*D + D) (ldo >= H*D).
// q: (n, ldq) with query head h at h*D (ldq >= H*D, e.g. the fused qkv row stride).
// k, v: (past + n, ldkv) with kv head j at j*D (ldkv >= KVH*D).
// key_begin (n values, absolute key positions) is optional. Runs on
// min(omp_get_max_threads(), threads the scratch holds) threads; results do not depend
// on the count. kInvalidArgument on a bad shape, stride, pointer or too small a scratch.
Status attention_decode(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, const float* v,
                        int64_t ldkv, const KvAttentionShape& s, float* scratch, size_t scratch_floats,
                        const int32_t* key_begin = nullptr);

// y (M) = A x for A (M x K, row stride lda >= K) and x (K): sgemv. A GEMM of one row
// repacks the whole matrix on every call, which dominates a decode step's LM head.
// kInvalidArgument on a negative size, short stride or null pointer (M or K 0: y = 0).
Status matvec(float* y, const float* A, int64_t M, int64_t K, int64_t lda, const float* x);

}  // namespace castor::kernels::cpu
