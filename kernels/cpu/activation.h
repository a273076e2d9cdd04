// Point-wise activations: GELU (tanh approximation, as GPT-2) and SwiGLU (Llama).
// Backward overwrites (=) the input gradient. GELU is evaluated as the equal form
// x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), which stays accurate for x < 0.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
Status gelu_forward(float* y, const float* x, int64_t n);
Status gelu_backward(float* dx, const float* dy, const float* x, int64_t n);

// in: (N, 2F), each row [gate (F) | up (F)]; out: (N, F) = silu(gate) * up.
Status swiglu_forward(float* out, const float* in, int64_t N, int64_t F);
// din: (N, 2F) = d out / d [gate | up].
Status swiglu_backward(float* din, const float* dout, const float* in, int64_t N, int64_t F);

}  // namespace castor::kernels::cpu
