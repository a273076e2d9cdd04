// Token (+ learned position) embedding lookup, forward and backward.
// ids: (N) int32 with N = B*T rows in (b, t) order; position of row n is n % T
// (kInvalidArgument unless T > 0 and N % T == 0).
// wte: (V, C); wpe: (P, C) or nullptr (RoPE models); T <= P.
// Backward accumulates (+=) into dwte and dwpe (dwpe may be nullptr); its sums are in row
// order, so the result is bitwise the same for any thread count.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// Vocabulary-parallel use: wte holds only rows [v_begin, v_begin + v_count) of the table
// (v_count < 0: all V); ids outside that range look up zeros and get no gradient.

// out (N, C) = wte[ids[n]] (+ wpe[n % T]). kOutOfRange if any id is outside [0, V).
Status embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe,
                         int64_t N, int64_t T, int64_t C, int64_t V, int64_t v_begin = 0,
                         int64_t v_count = -1);

// kOutOfRange (and nothing written) if any id is outside [0, V).
Status embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                          int64_t N, int64_t T, int64_t C, int64_t V, int64_t v_begin = 0,
                          int64_t v_count = -1);

}  // namespace castor::kernels::cpu
