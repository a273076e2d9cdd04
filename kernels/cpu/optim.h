// Optimizer kernels over flat fp32 ranges of the parameter arena: AdamW (decoupled
// weight decay, bias-corrected moments) and the sum of squares used for the global
// gradient norm. Accumulation in double so the norm does not depend on thread count.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;       // 1-based, for bias correction
  float grad_scale;   // multiplies g first (gradient clipping)
};

// w -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * w), moments updated in place.
Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const AdamWHyper& h);

// *out = sum g[i]^2, in double; deterministic for a given n whatever the thread count.
Status sum_squares(double* out, const float* g, int64_t n);

}  // namespace castor::kernels::cpu
