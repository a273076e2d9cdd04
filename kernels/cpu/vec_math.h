// Portable SIMD helpers for the CPU kernels, on GCC vector extensions sized to the widest
// register the build targets (AVX-512 / AVX / SSE): unaligned load/store, fixed-order
// reductions (deterministic for a given build), and a branch-free exp for x <= 0 (Cephes
// polynomial, ~1 ulp; results below 2^-126 flush to 0) with the softmax row passes built
// on it. For use inside kernel .cpp files only: the vector types stay out of interfaces.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace castor::kernels::cpu::vec {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // the vector types never cross a library boundary

// Lanes match the widest vector register the build targets.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
typedef float VecF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline VecF load(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }

// exp(x) lane-wise for x <= ~0: n = round(x / ln2) by truncation (valid for x <= 0.5),
// Cephes polynomial on the remainder (~1 ulp), times 2^n built in the exponent bits.
// Results below 2^-126 (x < -87.3) flush to 0; -inf gives 0.
inline VecF exp_nonpositive(VecF x) {
  x = x < -100.0f ? VecF{} - 100.0f : x;
  const VecI ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, VecI);
  const VecF n = __builtin_convertvector(ni, VecF);
  VecF r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  VecF p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const VecF y = p * r * r + r + 1.0f;
  VecI e = ni + 127;
  e = e < 0 ? VecI{} : e;
  return y * reinterpret_cast<VecF>(e << 23);
}

// Fixed-order horizontal sum (lane 0 first).
inline float hsum(VecF v) {
  float s = 0.0f;
  for (int64_t i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

inline float row_max(const float* x, int64_t n) {
  VecF m = VecF{} - INFINITY;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const VecF v = load(x + j);
    m = v > m ? v : m;
  }
  float r = -INFINITY;
  for (int64_t i = 0; i < kLanes; ++i) r = std::max(r, m[i]);
  for (; j < n; ++j) r = std::max(r, x[j]);
  return r;
}

// x[j] = exp(x[j] - shift) for j < n (x[j] - shift <= 0); returns the sum of the new
// values (lane sums combined in a fixed order).
inline float exp_shift_sum(float* x, int64_t n, float shift) {
  VecF acc{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const VecF e = exp_nonpositive(load(x + j) - shift);
    store(x + j, e);
    acc += e;
  }
  if (j < n) {  // tail through a padded vector so every element sees the same math
    float buf[kLanes];
    for (int64_t i = 0; i < kLanes; ++i) buf[i] = j + i < n ? x[j + i] : -INFINITY;
    const VecF e = exp_nonpositive(load(buf) - shift);
    store(buf, e);
    for (int64_t i = 0; j + i < n; ++i) x[j + i] = buf[i];
    acc += e;
  }
  return hsum(acc);
}

#pragma GCC diagnostic pop

}  // namespace castor::kernels::cpu::vec
