// GELU (tanh approximation) and SwiGLU, forward and backward (see activation.h).
// libm's expf/tanhf do not vectorise without -ffast-math, so this file carries its own
// branch-free exp (range reduction, degree-7 polynomial, exponent bits; ~2 ulp). Both
// activations are written through sigmoids, x / (1 + e^-z), accurate for either sign.
#include "kernels/cpu/activation.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements below which a loop stays serial
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// e^x, relative error ~2 ulp, for x clamped to [-87, 80] (results stay normal floats,
// and (1 + e^x)^-1 * e^x does not overflow).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 80.0f);
  // n = round(x / ln2): adding 1.5 * 2^23 rounds to an integer (std::floor/nearbyint
  // do not vectorise under the default -ftrapping-math).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // r = x - n ln2 in two steps (Cody-Waite) so r keeps full precision; |r| <= ~ln2/2.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return p * scale;
}

// GELU's tanh argument u; gelu(x) = 0.5 x (1 + tanh u) = x * sigmoid(2u), which has no
// cancellation for negative x.
inline float gelu_arg(float x) { return kSqrt2OverPi * (x + kGeluCubic * x * x * x); }

}  // namespace

Status gelu_forward(float* y, const float* x, int64_t n) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!y || !x) return Status::kInvalidArgument;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = v / (1.0f + exp_approx(-2.0f * gelu_arg(v)));
  }
  return Status::kOk;
}

Status gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!dx || !dy || !x) return Status::kInvalidArgument;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    // With s = sigmoid(2u): dy/dx = s + 2 x s (1 - s) du/dx, and 1 - s = e s, e = e^{-2u}.
    const float e = exp_approx(-2.0f * gelu_arg(v));
    const float s = 1.0f / (1.0f + e);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
    dx[i] = dy[i] * (s + 2.0f * v * (e * s) * s * du);
  }
  return Status::kOk;
}

Status swiglu_forward(float* out, const float* in, int64_t N, int64_t F) {
  if (N < 0 || F < 0) return Status::kInvalidArgument;
  if (N == 0 || F == 0) return Status::kOk;
  if (!out || !in) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * F >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float* gate = in + r * 2 * F;
    const float* up = gate + F;
    float* o = out + r * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float g = gate[j];
      o[j] = g / (1.0f + exp_approx(-g)) * up[j];
    }
  }
  return Status::kOk;
}

Status swiglu_backward(float* din, const float* dout, const float* in, int64_t N, int64_t F) {
  if (N < 0 || F < 0) return Status::kInvalidArgument;
  if (N == 0 || F == 0) return Status::kOk;
  if (!din || !dout || !in) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * F >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float* gate = in + r * 2 * F;
    const float* up = gate + F;
    const float* d = dout + r * F;
    float* dgate = din + r * 2 * F;
    float* dup = dgate + F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float g = gate[j];
      // d silu / dg = s (1 + g (1 - s)) with s = sigmoid(g), 1 - s = e s, e = e^{-g}.
      const float e = exp_approx(-g);
      const float s = 1.0f / (1.0f + e);
      dgate[j] = d[j] * up[j] * s * (1.0f + g * (e * s));
      dup[j] = d[j] * g * s;
    }
  }
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
