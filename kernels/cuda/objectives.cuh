// Auxiliary training objectives on a CUDA stream: mean pooling of row ranges, symmetric
// InfoNCE, per-row squared error and temperature-scaled KL distillation. Same math, argument
// order and Status codes as kernels/cpu/objectives.h (the reference), with device pointers.
// Losses are double: per-row values go to scratch, then one block sums them in a fixed order,
// so every result is deterministic. Rows are T (float, bf16 or f16); arithmetic is fp32/fp64.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// out[i] (C values) = mean of rows x[begin[i] .. end[i]-1], i < n (begin/end on the device).
// The ranges cannot be read on the host without a copy, so the caller passes host copies
// (begin_host, end_host) to get the CPU's validation (kInvalidArgument: empty range;
// kOutOfRange: outside [0, rows)), or both nullptr to skip it; exactly one nullptr is
// kInvalidArgument. An invalid range that reaches the device is never read out of bounds:
// its output row is NaN.
template <typename T>
Status segment_mean(T* out, const T* x, int64_t rows, int64_t C, const int32_t* begin, const int32_t* end, int64_t n,
                    const int32_t* begin_host, const int32_t* end_host, cudaStream_t stream);

// dx[r] += dout[i] / (end[i] - begin[i]) for every row r of range i (accumulates). Each
// element adds its ranges in order i = 0..n-1 (overlaps add up, no atomics). Validation as
// segment_mean; an invalid range that reaches the device contributes nothing.
template <typename T>
Status segment_mean_backward(T* dx, const T* dout, int64_t rows, int64_t C, const int32_t* begin, const int32_t* end,
                             int64_t n, const int32_t* begin_host, const int32_t* end_host, cudaStream_t stream);

// Symmetric InfoNCE over P >= 2 pairs of (P x D) rows (see the CPU header). *loss (device
// double), *correct_ab / *correct_ba (device int64, each may be nullptr); da/db (=) T
// gradients when da != nullptr. scratch: >= info_nce_scratch_floats(P, D) floats, 8-byte
// aligned. Same Status codes as the CPU (kNotSupported for P > 2^20: the P x P scratch).
size_t info_nce_scratch_floats(int64_t P, int64_t D);
template <typename T>
Status info_nce(const T* a, const T* b, int64_t P, int64_t D, float temperature, double* loss, int64_t* correct_ab,
                int64_t* correct_ba, float grad_scale, T* da, T* db, float* scratch, size_t scratch_floats,
                cudaStream_t stream);

// *loss_sum (device double) = sum over n rows of mean over D of (pred - target)^2;
// dpred (=) grad_scale * 2 (pred - target) / D if not nullptr. scratch: per-row losses,
// >= mse_rows_scratch_bytes(n) bytes, 8-byte aligned (may be nullptr when n == 0).
size_t mse_rows_scratch_bytes(int64_t n);
template <typename T>
Status mse_rows(const T* pred, const T* target, int64_t n, int64_t D, double* loss_sum, float grad_scale, T* dpred,
                void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Distillation over rows with mask >= 0 (mask: device int32, nullptr = every row);
// *loss_sum (device double), *count (device int64) and dstudent (=) as the CPU kernel
// (masked rows get 0). Identical student and teacher rows give exactly 0 loss and gradient.
// scratch: per-row losses, >= kl_distill_scratch_bytes(n) bytes, 8-byte aligned.
size_t kl_distill_scratch_bytes(int64_t n);
template <typename T>
Status kl_distill(const T* student, const T* teacher, const int32_t* mask, int64_t n, int64_t V, float temperature,
                  double* loss_sum, int64_t* count, float grad_scale, T* dstudent, void* scratch, size_t scratch_bytes,
                  cudaStream_t stream);

}  // namespace castor::kernels::cuda
