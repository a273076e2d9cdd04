// Point-wise activations on a CUDA stream: GELU (tanh approximation, as GPT-2) and SwiGLU
// (Llama), forward and backward; mirrors kernels/cpu/activation.h. Backward overwrites (=)
// the input gradient. Storage T (float, bf16 or f16), fp32 arithmetic. GELU is evaluated as
// x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), accurate for x < 0.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (y may alias x)
template <typename T>
Status gelu_forward(T* y, const T* x, int64_t n, cudaStream_t stream);
// dx = dy * gelu'(x)  (dx may alias dy)
template <typename T>
Status gelu_backward(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream);

// in: (N, 2F), each row [gate (F) | up (F)]; out: (N, F) = silu(gate) * up.
template <typename T>
Status swiglu_forward(T* out, const T* in, int64_t N, int64_t F, cudaStream_t stream);
// din: (N, 2F) = d out / d [gate | up].
template <typename T>
Status swiglu_backward(T* din, const T* dout, const T* in, int64_t N, int64_t F, cudaStream_t stream);

}  // namespace castor::kernels::cuda
