// Optimizer kernels over flat fp32 ranges of the parameter arena, on a CUDA stream: AdamW
// (optionally refreshing the bf16 compute copy of the weights in the same pass), the
// deterministic sum of squares behind the global gradient norm, and the unscale + inf/NaN
// check of fp16 dynamic loss scaling. kernels/cpu/optim.h is the reference for the first two.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/optim.h"
#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// w -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * w), moments updated in place; the
// CPU kernel's validation and Status codes.
Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h,
                  cudaStream_t stream);

// adamw_step, and w16[i] (=) the updated w[i] rounded to bf16 (the compute copy the forward
// reads) in the same pass; w16 == nullptr is plain adamw_step.
Status adamw_step_bf16copy(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h, bf16* w16,
                           cudaStream_t stream);

// *out (device double) = sum g[i]^2 in double. Two passes over a grid that depends on n
// only (per-block partials, then one block sums them in a fixed order): the same bits for a
// given n on every run. scratch: >= sum_squares_scratch_bytes(n) bytes, 8-byte aligned (may
// be nullptr when n == 0).
size_t sum_squares_scratch_bytes(int64_t n);
Status sum_squares(double* out, const float* g, int64_t n, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// fp16 dynamic loss scaling: g[i] *= inv_scale, and *found_inf (device int32) = 1 if any
// result is inf or NaN. *found_inf is never cleared here: zero it once, then call this for
// every gradient range of the step. kInvalidArgument: n < 0, inv_scale not finite, null
// found_inf (or null g with n > 0).
Status unscale_and_check(float* g, int64_t n, float inv_scale, int32_t* found_inf, cudaStream_t stream);

}  // namespace castor::kernels::cuda
