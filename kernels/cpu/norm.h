// LayerNorm and RMSNorm over the last dimension of (N, C) rows.
// Forward caches per-row statistics (mean, rstd) for backward.
// Backward overwrites (=) dx and accumulates (+=) into dw, db; dw and db are bitwise the
// same for any thread count. LayerNorm without bias: b = nullptr and db = nullptr.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// y = (x - mean) * rstd * w + b; mean, rstd: (N).
Status layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                         const float* b, int64_t N, int64_t C, float eps);
Status layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                          const float* w, const float* mean, const float* rstd, int64_t N,
                          int64_t C);

// y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps); rstd: (N).
Status rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N,
                       int64_t C, float eps);
Status rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int64_t N, int64_t C);

}  // namespace castor::kernels::cpu
