// Element-wise and row-broadcast kernels on a CUDA stream: residual adds, bias add / bias
// gradient, scaling (mirrors kernels/cpu/elementwise.h), plus the storage-type conversion
// the GPU needs to make the bf16 compute copy of the fp32 master weights. Rows are N x C
// row-major; *_accumulate variants add (+=) into their output, the rest overwrite (=).
// Activations are T (float, bf16 or f16) with fp32 arithmetic; the bias gradient is fp32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// out[i] = a[i] + b[i]  (out may alias a or b)
template <typename T>
Status add(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream);
// y[i] += x[i]
template <typename T>
Status add_accumulate(T* y, const T* x, int64_t n, cudaStream_t stream);
// y[n, c] += bias[c]; y: (N, C), bias: (C)
template <typename T>
Status bias_add_rows(T* y, const T* bias, int64_t N, int64_t C, cudaStream_t stream);
// dbias[c] += sum_n dy[n, c]; dbias: (C) fp32. Deterministic: one block per 8-column tile
// sums all rows in a fixed order (no atomics).
template <typename T>
Status bias_grad_accumulate(float* dbias, const T* dy, int64_t N, int64_t C, cudaStream_t stream);
// x[i] *= s
template <typename T>
Status scale(T* x, float s, int64_t n, cudaStream_t stream);

// out[i] = in[i] converted (bf16 and f16 round to nearest even). Instantiated for float ->
// bf16, bf16 -> float, float -> f16, f16 -> float and float -> float (a copy).
template <typename Tout, typename Tin>
Status convert(Tout* out, const Tin* in, int64_t n, cudaStream_t stream);

}  // namespace castor::kernels::cuda
