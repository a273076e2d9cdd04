// Element-wise kernels (see elementwise.cuh). Flat ops run one grid-stride kernel over
// packs of 16 bytes per thread (4 floats / 8 bf16 or f16) when every pointer is 16-byte aligned,
// else one element per thread. The bias gradient is a column reduction: a block owns 8
// columns (one 32-byte sector per float row) and 128 row lanes; each lane sums its rows
// in order, then the lane sums are added by a fixed tree, so it is deterministic.
#include "kernels/cuda/elementwise.cuh"

#include <algorithm>

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

// --- ops ---------------------------------------------------------------------------------

template <typename T>
struct AddOp {
  T* out;
  const T* a;
  const T* b;
  template <int W>
  __device__ void apply(int64_t i) const {
    float x[W], y[W];
    load_floats<W>(a + i, x);
    load_floats<W>(b + i, y);
#pragma unroll
    for (int j = 0; j < W; ++j) x[j] += y[j];
    store_floats<W>(out + i, x);
  }
};

template <typename T>
struct ScaleOp {
  T* x;
  float s;
  template <int W>
  __device__ void apply(int64_t i) const {
    float v[W];
    load_floats<W>(x + i, v);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] *= s;
    store_floats<W>(x + i, v);
  }
};

// y[n, c] += bias[c] on the flat index i = n * C + c; a pack never crosses a row because
// the vectorised launch requires C % W == 0.
template <typename T>
struct BiasAddOp {
  T* y;
  const T* bias;
  int64_t C;
  template <int W>
  __device__ void apply(int64_t i) const {
    float v[W], bv[W];
    load_floats<W>(y + i, v);
    load_floats<W>(bias + i % C, bv);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] += bv[j];
    store_floats<W>(y + i, v);
  }
};

template <typename Tout, typename Tin>
struct ConvertOp {
  Tout* out;
  const Tin* in;
  template <int W>
  __device__ void apply(int64_t i) const {
    float v[W];
    load_floats<W>(in + i, v);
    store_floats<W>(out + i, v);
  }
};

// --- bias gradient -----------------------------------------------------------------------

constexpr int kColTile = 8;                           // columns per block: one 32-byte sector of a float row
constexpr int kRowLanes = 128;                        // row lanes per block
constexpr int kReduceThreads = kColTile * kRowLanes;  // 1024

// Thread (lane, col) sums rows lane, lane + 128, ... of column c in order; then the 128
// lane sums of each column are added by a fixed tree. A warp reads 4 rows x 8 columns.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    bias_grad_kernel(float* __restrict__ dbias, const T* __restrict__ dy, int64_t N, int64_t C) {
  __shared__ float part[kRowLanes][kColTile];
  const int col = threadIdx.x % kColTile, lane = threadIdx.x / kColTile;
  const int64_t c = blockIdx.x * int64_t(kColTile) + col;
  float acc = 0.0f;
  if (c < C) {
#pragma unroll 4
    for (int64_t n = lane; n < N; n += kRowLanes) acc += to_float(dy[n * C + c]);
  }
  part[lane][col] = acc;
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (lane < half) part[lane][col] += part[lane + half][col];
    __syncthreads();
  }
  if (lane == 0 && c < C) dbias[c] += part[0][col];
}

}  // namespace

template <typename T>
Status add(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!out || !a || !b) return Status::kInvalidArgument;
  const bool vec = aligned16(out) && aligned16(a) && aligned16(b);
  return launch_pointwise<kVec<T>>(AddOp<T>{out, a, b}, n, vec, stream);
}

template <typename T>
Status add_accumulate(T* y, const T* x, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!y || !x) return Status::kInvalidArgument;
  const bool vec = aligned16(y) && aligned16(x);
  return launch_pointwise<kVec<T>>(AddOp<T>{y, y, x}, n, vec, stream);
}

template <typename T>
Status bias_add_rows(T* y, const T* bias, int64_t N, int64_t C, cudaStream_t stream) {
  if (N < 0 || C < 0) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  if (!y || !bias) return Status::kInvalidArgument;
  const bool vec = aligned16(y) && aligned16(bias) && C % kVec<T> == 0;
  return launch_pointwise<kVec<T>>(BiasAddOp<T>{y, bias, C}, N * C, vec, stream);
}

template <typename T>
Status bias_grad_accumulate(float* dbias, const T* dy, int64_t N, int64_t C, cudaStream_t stream) {
  if (N < 0 || C < 0) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  if (!dbias || !dy) return Status::kInvalidArgument;
  const int64_t blocks = (C + kColTile - 1) / kColTile;
  if (blocks > int64_t(INT32_MAX)) return Status::kInvalidArgument;
  bias_grad_kernel<<<unsigned(blocks), kReduceThreads, 0, stream>>>(dbias, dy, N, C);
  return launched();
}

template <typename T>
Status scale(T* x, float s, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!x) return Status::kInvalidArgument;
  return launch_pointwise<kVec<T>>(ScaleOp<T>{x, s}, n, aligned16(x), stream);
}

template <typename Tout, typename Tin>
Status convert(Tout* out, const Tin* in, int64_t n, cudaStream_t stream) {
  if (n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (!out || !in) return Status::kInvalidArgument;
  // W fills whole 16-byte words on both sides: 8 for any bf16 or f16 side, 4 for float -> float.
  constexpr int W = std::max(kVec<Tout>, kVec<Tin>);
  const bool vec = aligned16(out) && aligned16(in);
  return launch_pointwise<W>(ConvertOp<Tout, Tin>{out, in}, n, vec, stream);
}

#define CASTOR_INSTANTIATE(T)                                                                \
  template Status add<T>(T*, const T*, const T*, int64_t, cudaStream_t);                     \
  template Status add_accumulate<T>(T*, const T*, int64_t, cudaStream_t);                    \
  template Status bias_add_rows<T>(T*, const T*, int64_t, int64_t, cudaStream_t);            \
  template Status bias_grad_accumulate<T>(float*, const T*, int64_t, int64_t, cudaStream_t); \
  template Status scale<T>(T*, float, int64_t, cudaStream_t);
CASTOR_INSTANTIATE(float)
CASTOR_INSTANTIATE(bf16)
CASTOR_INSTANTIATE(f16)
#undef CASTOR_INSTANTIATE

template Status convert<bf16, float>(bf16*, const float*, int64_t, cudaStream_t);
template Status convert<float, bf16>(float*, const bf16*, int64_t, cudaStream_t);
template Status convert<f16, float>(f16*, const float*, int64_t, cudaStream_t);
template Status convert<float, f16>(float*, const f16*, int64_t, cudaStream_t);
template Status convert<float, float>(float*, const float*, int64_t, cudaStream_t);

}  // namespace castor::kernels::cuda
