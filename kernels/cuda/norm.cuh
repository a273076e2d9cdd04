// LayerNorm and RMSNorm over the last dimension of (N, C) rows on a CUDA stream; mirrors
// kernels/cpu/norm.h. x, y, dy, dx and the weights w, b are T (float, bf16 or f16); the row
// statistics mean, rstd (N) and the parameter gradients dw, db (C) are fp32. Forward
// caches mean/rstd for backward. Backward overwrites (=) dx and accumulates (+=) into dw,
// db deterministically (fixed summation order, no atomics, no scratch). LayerNorm without
// bias: b = nullptr and db = nullptr.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// y = (x - mean) * rstd * w + b; mean, rstd: (N).
template <typename T>
Status layernorm_forward(T* y, float* mean, float* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C,
                         float eps, cudaStream_t stream);
template <typename T>
Status layernorm_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const T* w, const float* mean,
                          const float* rstd, int64_t N, int64_t C, cudaStream_t stream);

// y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps); rstd: (N).
template <typename T>
Status rmsnorm_forward(T* y, float* rstd, const T* x, const T* w, int64_t N, int64_t C, float eps, cudaStream_t stream);
template <typename T>
Status rmsnorm_backward(T* dx, float* dw, const T* dy, const T* x, const T* w, const float* rstd, int64_t N, int64_t C,
                        cudaStream_t stream);

}  // namespace castor::kernels::cuda
