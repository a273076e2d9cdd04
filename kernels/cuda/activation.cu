// GELU and SwiGLU, forward and backward (see activation.cuh), as one grid-stride kernel
// over packs of 16 bytes per thread (4 floats / 8 bf16 or f16) when the pointers are 16-byte
// aligned (and, for SwiGLU, F fills whole packs), else one element per thread. Same
// formulas as kernels/cpu/activation.cpp with expf in place of its polynomial exp; the
// exp argument is clamped to [-87, 80] as there, so e * s never becomes inf * 0.
#include "kernels/cuda/activation.cuh"

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// --- math --------------------------------------------------------------------------------

// e^x with x clamped like the CPU kernel: results stay normal floats and finite.
__device__ __forceinline__ float exp_clamped(float x) { return expf(fminf(fmaxf(x, -87.0f), 80.0f)); }

// GELU's tanh argument u; gelu(x) = x * sigmoid(2u).
__device__ __forceinline__ float gelu_arg(float x) { return kSqrt2OverPi * (x + kGeluCubic * x * x * x); }

// --- ops ---------------------------------------------------------------------------------

template <typename T>
struct GeluForward {
  T* y;
  const T* x;
  template <int W>
  __device__ void apply(int64_t i) const {
    float v[W];
    load_floats<W>(x + i, v);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = v[j] / (1.0f + exp_clamped(-2.0f * gelu_arg(v[j])));
    store_floats<W>(y + i, v);
  }
};

template <typename T>
struct GeluBackward {
  T* dx;
  const T* dy;
  const T* x;
  template <int W>
  __device__ void apply(int64_t i) const {
    float v[W], d[W];
    load_floats<W>(x + i, v);
    load_floats<W>(dy + i, d);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      // With s = sigmoid(2u): dy/dx = s + 2 x s (1 - s) du/dx, and 1 - s = e s, e = e^{-2u}.
      const float e = exp_clamped(-2.0f * gelu_arg(v[j]));
      const float s = 1.0f / (1.0f + e);
      const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v[j] * v[j]);
      d[j] = d[j] * (s + 2.0f * v[j] * (e * s) * s * du);
    }
    store_floats<W>(dx + i, d);
  }
};

// Flat index i = r * F + j over out (N, F); a pack stays inside a row (F % W == 0 when
// vectorised).
template <typename T>
struct SwigluForward {
  T* out;
  const T* in;
  int64_t F;
  template <int W>
  __device__ void apply(int64_t i) const {
    const int64_t r = i / F, j = i - r * F;
    const T* gate = in + r * 2 * F + j;
    float g[W], u[W];
    load_floats<W>(gate, g);
    load_floats<W>(gate + F, u);
#pragma unroll
    for (int k = 0; k < W; ++k) g[k] = g[k] / (1.0f + exp_clamped(-g[k])) * u[k];
    store_floats<W>(out + i, g);
  }
};

template <typename T>
struct SwigluBackward {
  T* din;
  const T* dout;
  const T* in;
  int64_t F;
  template <int W>
  __device__ void apply(int64_t i) const {
    const int64_t r = i / F, j = i - r * F;
    const int64_t off = r * 2 * F + j;  // gate element; up is F further
    float g[W], u[W], d[W], dg[W], du[W];
    load_floats<W>(in + off, g);
    load_floats<W>(in + off + F, u);
    load_floats<W>(dout + i, d);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      // d silu / dg = s (1 + g (1 - s)) with s = sigmoid(g), 1 - s = e s, e = e^{-g}.
      const float e = exp_clamped(-g[k]);
      const float s = 1.0f / (1.0f + e);
      dg[k] = d[k] * u[k] * s * (1.0f + g[k] * (e * s));
      du[k] = d[k] * g[k] * s;
    }
    store_floats<W>(din + off, dg);
    store_floats<W>(din + off + F, du);
  }
};

}  // namespace

template <typename T>
Status gelu_forward(T* y, const T* x, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!y || !x) return Status::kInvalidArgument;
  const bool vec = aligned16(y) && aligned16(x);
  return launch_pointwise<kVec<T>>(GeluForward<T>{y, x}, n, vec, stream);
}

template <typename T>
Status gelu_backward(T* dx, const T* dy, const T* x, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!dx || !dy || !x) return Status::kInvalidArgument;
  const bool vec = aligned16(dx) && aligned16(dy) && aligned16(x);
  return launch_pointwise<kVec<T>>(GeluBackward<T>{dx, dy, x}, n, vec, stream);
}

template <typename T>
Status swiglu_forward(T* out, const T* in, int64_t N, int64_t F, cudaStream_t stream) {
  if (N < 0 || F < 0) return Status::kInvalidArgument;
  if (N == 0 || F == 0) return Status::kOk;
  if (!out || !in) return Status::kInvalidArgument;
  const bool vec = aligned16(out) && aligned16(in) && F % kVec<T> == 0;
  return launch_pointwise<kVec<T>>(SwigluForward<T>{out, in, F}, N * F, vec, stream);
}

template <typename T>
Status swiglu_backward(T* din, const T* dout, const T* in, int64_t N, int64_t F, cudaStream_t stream) {
  if (N < 0 || F < 0) return Status::kInvalidArgument;
  if (N == 0 || F == 0) return Status::kOk;
  if (!din || !dout || !in) return Status::kInvalidArgument;
  const bool vec = aligned16(din) && aligned16(dout) && aligned16(in) && F % kVec<T> == 0;
  return launch_pointwise<kVec<T>>(SwigluBackward<T>{din, dout, in, F}, N * F, vec, stream);
}

#define CASTOR_INSTANTIATE(T)                                                      \
  template Status gelu_forward<T>(T*, const T*, int64_t, cudaStream_t);            \
  template Status gelu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t); \
  template Status swiglu_forward<T>(T*, const T*, int64_t, int64_t, cudaStream_t); \
  template Status swiglu_backward<T>(T*, const T*, const T*, int64_t, int64_t, cudaStream_t);
CASTOR_INSTANTIATE(float)
CASTOR_INSTANTIATE(bf16)
CASTOR_INSTANTIATE(f16)
#undef CASTOR_INSTANTIATE

}  // namespace castor::kernels::cuda
