// AdamW update and sum of squares over flat fp32 ranges (see optim.h).
// sum_squares cuts [0, n) into at most kMaxBlocks blocks whose size depends on n only;
// each block is summed in double by one fixed code path and the block sums are added in
// order, so the result is the same bit pattern for any thread count.
#include "kernels/cpu/optim.h"

#include <algorithm>
#include <cmath>

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which a loop stays serial
constexpr int64_t kMaxBlocks = 256;        // partial sums of sum_squares (on the stack)
constexpr int64_t kMinBlock = 4096;        // smallest block of sum_squares

}  // namespace

Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const AdamWHyper& h) {
  if (n < 0 || h.step < 1) return Status::kInvalidArgument;
  if (!(h.beta1 >= 0.0f && h.beta1 < 1.0f) || !(h.beta2 >= 0.0f && h.beta2 < 1.0f) ||
      !(h.eps >= 0.0f) || !std::isfinite(h.lr) || !std::isfinite(h.weight_decay) ||
      !std::isfinite(h.grad_scale)) {
    return Status::kInvalidArgument;
  }
  if (n == 0) return Status::kOk;
  if (!w || !g || !m || !v) return Status::kInvalidArgument;
  const float b1 = h.beta1, b2 = h.beta2;
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  // Bias corrections in double: beta^step underflows gracefully, 1 - beta^step stays exact.
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(b1), double(h.step))));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(b2), double(h.step))));
  const float lr = h.lr, wd = h.weight_decay, eps = h.eps, gs = h.grad_scale;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * gs;
    const float mi = b1 * m[i] + c1 * gi;
    const float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi * inv_bc1;
    const float vhat = vi * inv_bc2;
    w[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * w[i]);
  }
  return Status::kOk;
}

Status sum_squares(double* out, const float* g, int64_t n) {
  if (n < 0 || out == nullptr) return Status::kInvalidArgument;
  if (n == 0) {
    *out = 0.0;
    return Status::kOk;
  }
  if (g == nullptr) return Status::kInvalidArgument;
  // Block size: a multiple of 64 that depends on n alone.
  int64_t block = std::max(kMinBlock, (n + kMaxBlocks - 1) / kMaxBlocks);
  block = (block + 63) / 64 * 64;
  const int64_t blocks = (n + block - 1) / block;
  double partial[kMaxBlocks];
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = g + b * block;
    const int64_t len = std::min(block, n - b * block);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < len; ++i) s += double(p[i]) * double(p[i]);
    partial[b] = s;
  }
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[b];
  *out = total;
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
