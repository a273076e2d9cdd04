// Helpers for the CUDA kernel tests (tests/cuda): device arrays with upload/download and
// NaN poisoning, fresh random inputs (seed printed on failure), bf16/f16 rounding so the CPU
// reference sees the GPU's inputs, and the relative L2 error with per-dtype tolerances.
// The main (support/cuda_test_main.cpp) skips the whole binary when no device exists.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/cuda/types.cuh"

namespace castor::cuda_test {

using kernels::cuda::bf16;
using kernels::cuda::f16;

#define CUDA_OK(expr)                                                                      \
  do {                                                                                     \
    const cudaError_t e_ = (expr);                                                         \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);                 \
  } while (0)

// The storage types every typed kernel test runs over.
using StorageTypes = ::testing::Types<float, bf16, f16>;

// Host float -> storage type T (round to nearest even for bf16 and f16) and back.
template <typename T>
T to_storage(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, f16>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}
inline float to_host_float(float x) { return x; }
inline float to_host_float(bf16 x) { return __bfloat162float(x); }
inline float to_host_float(f16 x) { return __half2float(x); }

// Each value rounded through T, so a CPU reference computes on exactly the GPU's inputs.
template <typename T>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = to_host_float(to_storage<T>(x));
  return v;
}

// A fresh seed per call (tests draw new inputs every run); SCOPED_TRACE it in the test.
inline uint64_t fresh_seed() {
  static std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}
inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}
inline std::vector<int32_t> random_ints(size_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int32_t> u(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = u(gen);
  return v;
}

// Device memory of n elements of T; freed on destruction.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (n && cudaMalloc(&p_, n * sizeof(T)) != cudaSuccess) p_ = nullptr;
    EXPECT_TRUE(n == 0 || p_ != nullptr) << "cudaMalloc of " << n * sizeof(T) << " bytes";
  }
  // Uploads host floats converted to T (or ints as they are).
  template <typename H>
  explicit DeviceArray(const std::vector<H>& host) : DeviceArray(host.size()) {
    upload(host);
  }
  ~DeviceArray() {
    if (p_) cudaFree(p_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  template <typename H>
  void upload(const std::vector<H>& host) {
    std::vector<T> tmp(host.size());
    for (size_t i = 0; i < host.size(); ++i) {
      if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) tmp[i] = to_storage<T>(float(host[i]));
      else tmp[i] = T(host[i]);
    }
    EXPECT_EQ(cudaMemcpy(p_, tmp.data(), tmp.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  // All bytes 0xFF: NaN for float, bf16 and f16, -1 for integers; an unwritten output shows.
  void poison() { EXPECT_EQ(cudaMemset(p_, 0xFF, n_ * sizeof(T)), cudaSuccess); }
  // Contents as host floats (T float/bf16/f16) or as they are (integers); synchronises first.
  auto download() const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<T> tmp(n_);
    EXPECT_EQ(cudaMemcpy(tmp.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
      std::vector<float> out(n_);
      for (size_t i = 0; i < n_; ++i) out[i] = to_host_float(tmp[i]);
      return out;
    } else {
      return tmp;
    }
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// ||got - want|| / ||want|| in double; infinite if any value of `got` is not finite. With
// floor > 0 the denominator is at least floor * sqrt(n): values whose error is absolute
// rather than relative (a log near 0, f16 subnormals) are judged on that scale.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want, double floor = 0.0) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  den = std::max(den, floor * floor * double(want.size()));
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// rel_error of an output stored as T. Below 2^-14 f16 is subnormal and keeps an absolute
// precision of 2^-25 (2^-11 of 2^-14) instead of a relative one, so for f16 the reference's
// norm counts as at least 2^-14 per element: exact values that small (a lone product near 0,
// gelu(x) for x < -4, RMSNorm's dx at C = 1) are judged on that absolute scale.
template <typename T>
double stored_rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  return rel_error(got, want, std::is_same_v<T, f16> ? std::ldexp(1.0, -14) : 0.0);
}

// Relative L2 tolerance of an output stored as T against the fp32 CPU kernel on the same
// (rounded) inputs: fp32 differs by summation order only; bf16 by the output's rounding
// (2^-9 relative) and bf16 intermediates; f16 likewise, 4x finer (2^-11 relative).
template <typename T>
constexpr double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, f16>) return 2e-3;
  else return 1e-2;
}

// Attention outputs (attention_test, kv_attention_test) against the fp32 CPU kernel: fp32
// differs by summation order and the online softmax's rescaling; bf16 and f16 round P before
// the P V product and the output after it (2^-9, 2^-11 relative).
template <typename T>
constexpr double attention_out_tolerance() {
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  else if constexpr (std::is_same_v<T, f16>) return 2.5e-3;
  else return 1e-2;
}

// Fails unless cudaDeviceSynchronize and the last error are clean.
inline void expect_device_clean() {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace castor::cuda_test
