// Element-wise and row-broadcast kernels (see elementwise.h). Flat loops are split over
// OpenMP threads once they are large enough to pay for the fork; the bias gradient is
// split over column blocks, each summing its rows in order in double, so its result does
// not depend on the thread count.
#include "kernels/cpu/elementwise.h"

#include "kernels/cpu/column_reduce.h"

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which a loop stays serial

}  // namespace

Status add(float* out, const float* a, const float* b, int64_t n) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (out == nullptr || a == nullptr || b == nullptr) return Status::kInvalidArgument;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  return Status::kOk;
}

Status add_accumulate(float* y, const float* x, int64_t n) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (y == nullptr || x == nullptr) return Status::kInvalidArgument;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  return Status::kOk;
}

Status bias_add_rows(float* y, const float* bias, int64_t N, int64_t C) {
  if (N < 0 || C < 0) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  if (y == nullptr || bias == nullptr) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* row = y + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) row[c] += bias[c];
  }
  return Status::kOk;
}

Status bias_grad_accumulate(float* dbias, const float* dy, int64_t N, int64_t C) {
  if (N < 0 || C < 0) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  if (dbias == nullptr || dy == nullptr) return Status::kInvalidArgument;
  accumulate_columns<1>({dbias}, N, C, N * C >= kParallelMin, [&](int64_t n, int64_t c0, int64_t w, auto& acc) {
    const float* row = dy + n * C + c0;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) acc[0][j] += double(row[j]);
  });
  return Status::kOk;
}

Status scale(float* x, float s, int64_t n) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (x == nullptr) return Status::kInvalidArgument;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
