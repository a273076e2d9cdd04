// Small element-wise and row-broadcast kernels used by the modules: residual adds,
// bias add / bias gradient, scaling. Conventions: rows are N x C row-major;
// *_accumulate variants add (+=) into their output, the rest overwrite (=).
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// out[i] = a[i] + b[i]
Status add(float* out, const float* a, const float* b, int64_t n);
// y[i] += x[i]
Status add_accumulate(float* y, const float* x, int64_t n);
// y[n, c] += bias[c]
Status bias_add_rows(float* y, const float* bias, int64_t N, int64_t C);
// dbias[c] += sum_n dy[n, c]
Status bias_grad_accumulate(float* dbias, const float* dy, int64_t N, int64_t C);
// x[i] *= s
Status scale(float* x, float s, int64_t n);

}  // namespace castor::kernels::cpu
