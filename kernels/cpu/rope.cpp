// Rotary position embedding, rotate_half convention (see rope.h). The table is built in
// double (angle t * theta^(-2i/D), then cos/sin) and rounded once to float, so large
// positions keep accurate angles. Application is in place, rows split over threads.
#include "kernels/cpu/rope.h"

#include <cmath>

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // floats below which a loop stays serial

}  // namespace

Status rope_table(float* table, int64_t T, int64_t D, float theta) {
  if (T < 0 || D <= 0 || D % 2 != 0 || !(theta > 0.0f)) return Status::kInvalidArgument;
  if (T == 0) return Status::kOk;
  if (table == nullptr) return Status::kInvalidArgument;
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (T * D >= kParallelMin)
  for (int64_t t = 0; t < T; ++t) {
    float* row = table + t * D;  // (D/2, 2) per position
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(double(theta), -2.0 * double(i) / double(D));
      const double angle = double(t) * inv_freq;
      row[2 * i] = float(std::cos(angle));
      row[2 * i + 1] = float(std::sin(angle));
    }
  }
  return Status::kOk;
}

Status rope_apply(float* x, const float* table, int64_t B, int64_t T, int64_t n_heads,
                  int64_t D, int64_t row_stride, bool inverse) {
  if (B < 0 || T < 0 || n_heads < 0 || D <= 0 || D % 2 != 0 || row_stride < n_heads * D) {
    return Status::kInvalidArgument;
  }
  const int64_t rows = B * T;
  if (rows == 0 || n_heads == 0) return Status::kOk;
  if (x == nullptr || table == nullptr) return Status::kInvalidArgument;
  const int64_t half = D / 2;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if (rows * n_heads * D >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* cs = table + (r % T) * D;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x1 = x + r * row_stride + h * D;
      float* x2 = x1 + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float c = cs[2 * i];
        const float s = sign * cs[2 * i + 1];
        const float a = x1[i], b = x2[i];
        x1[i] = a * c - b * s;
        x2[i] = b * c + a * s;
      }
    }
  }
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
