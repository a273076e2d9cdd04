// Causal scaled-dot-product attention with grouped-query heads, forward and backward.
// qkv: (B, T, (H + 2*KVH) * D), each row [q heads (H*D) | k heads (KVH*D) | v heads (KVH*D)].
// Query head h reads kv head h / (H / KVH). out: (B, T, H*D). lse: (B, H, T) log-sum-exp
// of the scaled, masked scores, saved so backward recomputes probabilities tile by tile
// instead of keeping a (T x T) matrix per head. Backward overwrites (=) dqkv.
// key_begin (B x T, optional): query t attends to keys [key_begin[b, t], t] (clamped),
// e.g. a media segment encoded on its own (docs/model.md "Attention mask").
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

struct AttentionShape {
  int64_t B, T, H, KVH, D;
};

// Floats of scratch both forward and backward need (per-thread tiles).
size_t attention_scratch_floats(const AttentionShape& s, int threads);

Status attention_forward(float* out, float* lse, const float* qkv, const AttentionShape& s,
                         float* scratch, size_t scratch_floats, const int32_t* key_begin = nullptr);

Status attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, const AttentionShape& s, float* scratch,
                          size_t scratch_floats, const int32_t* key_begin = nullptr);

}  // namespace castor::kernels::cpu
