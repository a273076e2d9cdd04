// LayerNorm and RMSNorm over (N, C) rows, forward and backward (see norm.h).
// Row statistics are accumulated in double. Backward computes dx row-parallel, then the
// parameter gradients column-block-parallel: each block sums all rows in order (double),
// so dw and db are bitwise the same whatever the thread count.
#include "kernels/cpu/norm.h"

#include <cmath>

#include "kernels/cpu/column_reduce.h"

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // floats below which a loop stays serial

bool bad_sizes(int64_t N, int64_t C) { return N < 0 || C <= 0; }

}  // namespace

Status layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                         const float* b, int64_t N, int64_t C, float eps) {
  if (bad_sizes(N, C) || !(eps >= 0.0f)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!y || !mean || !rstd || !x || !w) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* yr = y + n * C;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += double(xr[c]);
    const double mu = s / double(C);
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) {
      const double d = double(xr[c]) - mu;
      ss += d * d;
    }
    const float m = float(mu);
    const float r = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    mean[n] = m;
    rstd[n] = r;
    if (b != nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * r * w[c] + b[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * r * w[c];
    }
  }
  return Status::kOk;
}

Status layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                          const float* w, const float* mean, const float* rstd, int64_t N,
                          int64_t C) {
  if (bad_sizes(N, C)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dx || !dw || !dy || !x || !w || !mean || !rstd) return Status::kInvalidArgument;
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, xhat = (x - mean) * rstd.
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    float* dxr = dx + n * C;
    const float m = mean[n], r = rstd[n];
    double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t c = 0; c < C; ++c) {
      const float g = dyr[c] * w[c];
      sg += double(g);
      sgx += double(g * ((xr[c] - m) * r));
    }
    const float mg = float(sg / double(C));
    const float mgx = float(sgx / double(C));
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * r;
      dxr[c] = r * (dyr[c] * w[c] - mg - xhat * mgx);
    }
  }
  // acc[0] gathers dw, acc[1] db (skipped when db is null).
  accumulate_columns<2>({dw, db}, N, C, N * C >= kParallelMin, [&](int64_t n, int64_t c0, int64_t width, auto& acc) {
    const float* xr = x + n * C + c0;
    const float* dyr = dy + n * C + c0;
    const float m = mean[n], r = rstd[n];
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      acc[0][j] += double(dyr[j] * ((xr[j] - m) * r));
      acc[1][j] += double(dyr[j]);
    }
  });
  return Status::kOk;
}

Status rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N,
                       int64_t C, float eps) {
  if (bad_sizes(N, C) || !(eps >= 0.0f)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!y || !rstd || !x || !w) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* yr = y + n * C;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
    const float r = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    rstd[n] = r;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * r * w[c];
  }
  return Status::kOk;
}

Status rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int64_t N, int64_t C) {
  if (bad_sizes(N, C)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dx || !dw || !dy || !x || !w || !rstd) return Status::kInvalidArgument;
  // dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * w, xhat = x * rstd.
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    float* dxr = dx + n * C;
    const float r = rstd[n];
    double sgx = 0.0;
#pragma omp simd reduction(+ : sgx)
    for (int64_t c = 0; c < C; ++c) sgx += double(dyr[c] * w[c] * (xr[c] * r));
    const float mgx = float(sgx / double(C));
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = xr[c] * r;
      dxr[c] = r * (dyr[c] * w[c] - xhat * mgx);
    }
  }
  accumulate_columns<1>({dw}, N, C, N * C >= kParallelMin, [&](int64_t n, int64_t c0, int64_t width, auto& acc) {
    const float* xr = x + n * C + c0;
    const float* dyr = dy + n * C + c0;
    const float r = rstd[n];
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) acc[0][j] += double(dyr[j] * (xr[j] * r));
  });
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
