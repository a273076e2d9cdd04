// Token (+ learned position) embedding lookup on a CUDA stream, forward and backward;
// mirrors kernels/cpu/embedding.h. ids: (N) int32 on the device, N = B*seq rows in (b, t)
// order, position of row n is n % seq (`T` of the CPU header is `seq` here; kInvalidArgument
// unless seq > 0 and N % seq == 0). wte: (v_count, C) and wpe: (P, C) or nullptr are T
// compute weights (float, bf16 or f16); seq <= P. Backward accumulates (+=) into the fp32
// gradients dwte, dwpe (dwpe may be nullptr), deterministically (fixed order, no atomics).
//
// Vocabulary-parallel use: wte holds only rows [v_begin, v_begin + v_count) of the table
// (v_count < 0: all V); valid ids outside that range look up zeros (plus wpe) and get no
// gradient.
// Bad ids: the host cannot see device ids without a sync, so an id outside [0, V) is
// reported through `bad_ids` (a device int32, may be nullptr) instead of kOutOfRange: the
// kernels set *bad_ids = 1 (they never clear it; the caller zeroes it and checks it when
// convenient), never read wte out of bounds, write zeros for that row in forward and give
// it no wte gradient in backward (dwpe still receives it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// out (N, C) = wte[ids[n]] (+ wpe[n % seq]).
template <typename T>
Status embedding_forward(T* out, const int32_t* ids, const T* wte, const T* wpe, int64_t N, int64_t seq, int64_t C,
                         int64_t V, int64_t v_begin, int64_t v_count, int32_t* bad_ids, cudaStream_t stream);

// dwte[ids[n] - v_begin] += dout[n] for ids in the slice; dwpe[t] += sum_b dout[b * seq + t].
// Cost: every block of the dwte kernel scans all N ids (blocks = ceil(C / 256) x
// ceil(v_count / 32)), so the id scan is O(N * C / 256 * v_count / 32) cheap shared-memory
// steps; dout is read once and each touched dwte row is read and written once.
template <typename T>
Status embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* ids, int64_t N, int64_t seq,
                          int64_t C, int64_t V, int64_t v_begin, int64_t v_count, int32_t* bad_ids,
                          cudaStream_t stream);

}  // namespace castor::kernels::cuda
