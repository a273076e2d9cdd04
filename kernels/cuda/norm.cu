// LayerNorm and RMSNorm, forward and backward (see norm.cuh). Row kernels: one warp per
// row, 16-byte loads when aligned and C fills whole packs; each pass (mean, variance,
// output) re-reads the row from L1/L2; row sums in fp32 (the CPU uses double). dw and db:
// a second, column-reduction kernel (a block owns 8 columns x 128 row lanes, lanes sum
// rows in order, then a fixed tree), deterministic without scratch at the cost of reading
// x and dy once more. RMSNorm is LayerNorm with mean 0 and no bias (flag kCentered).
#include "kernels/cuda/norm.cuh"

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kRowWarps = 8;                          // rows per block of the row kernels (one warp each)
constexpr int kColTile = 8;                           // columns per block of the parameter-gradient kernel
constexpr int kRowLanes = 128;                        // row lanes per block there
constexpr int kReduceThreads = kColTile * kRowLanes;  // 1024

// --- kernels -----------------------------------------------------------------------------

// Lane `lane` of a row walks packs c = lane * W, lane * W + 32 W, ... (C % W == 0).
template <int W, bool kCentered, typename T>
__global__ void norm_forward_kernel(T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                    const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                    int64_t N, int64_t C, float eps) {
  const int64_t row = blockIdx.x * int64_t(kRowWarps) + threadIdx.x / 32;
  if (row >= N) return;  // whole warps leave together, so the shuffles below see 32 lanes
  const int lane = threadIdx.x % 32;
  const T* xr = x + row * C;
  T* yr = y + row * C;
  float m = 0.0f;
  if constexpr (kCentered) {
    float s = 0.0f;
    for (int64_t c = int64_t(lane) * W; c < C; c += 32 * W) {
      float v[W];
      load_floats<W>(xr + c, v);
#pragma unroll
      for (int j = 0; j < W; ++j) s += v[j];
    }
    m = warp_sum(s) / float(C);
  }
  float ss = 0.0f;
  for (int64_t c = int64_t(lane) * W; c < C; c += 32 * W) {
    float v[W];
    load_floats<W>(xr + c, v);
#pragma unroll
    for (int j = 0; j < W; ++j) ss += (v[j] - m) * (v[j] - m);
  }
  const float r = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
  if (lane == 0) {
    if constexpr (kCentered) mean[row] = m;
    rstd[row] = r;
  }
  for (int64_t c = int64_t(lane) * W; c < C; c += 32 * W) {
    float v[W], wv[W];
    load_floats<W>(xr + c, v);
    load_floats<W>(w + c, wv);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = (v[j] - m) * r * wv[j];
    if (b != nullptr) {
      float bv[W];
      load_floats<W>(b + c, bv);
#pragma unroll
      for (int j = 0; j < W; ++j) v[j] += bv[j];
    }
    store_floats<W>(yr + c, v);
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w, xhat = (x - mean) * rstd;
// RMSNorm drops the mean(g) term (mean = 0).
template <int W, bool kCentered, typename T>
__global__ void norm_backward_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                        const T* __restrict__ w, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * int64_t(kRowWarps) + threadIdx.x / 32;
  if (row >= N) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  const T* xr = x + row * C;
  const T* dyr = dy + row * C;
  T* dxr = dx + row * C;
  const float m = kCentered ? mean[row] : 0.0f, r = rstd[row];
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t c = int64_t(lane) * W; c < C; c += 32 * W) {
    float v[W], d[W], wv[W];
    load_floats<W>(xr + c, v);
    load_floats<W>(dyr + c, d);
    load_floats<W>(w + c, wv);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const float g = d[j] * wv[j];
      sg += g;
      sgx += g * ((v[j] - m) * r);
    }
  }
  const float mg = kCentered ? warp_sum(sg) / float(C) : 0.0f;
  const float mgx = warp_sum(sgx) / float(C);
  for (int64_t c = int64_t(lane) * W; c < C; c += 32 * W) {
    float v[W], d[W], wv[W];
    load_floats<W>(xr + c, v);
    load_floats<W>(dyr + c, d);
    load_floats<W>(w + c, wv);
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = r * (d[j] * wv[j] - mg - ((v[j] - m) * r) * mgx);
    store_floats<W>(dxr + c, v);
  }
}

// dw[c] += sum_n dy[n, c] * xhat[n, c]; db[c] += sum_n dy[n, c] (db may be null). Thread
// (lane, col) sums rows lane, lane + 128, ... in order; the 128 lane sums are added by a
// fixed tree. A warp reads 4 rows x 8 columns.
template <bool kCentered, typename T>
__global__ void __launch_bounds__(kReduceThreads)
    norm_param_grad_kernel(float* __restrict__ dw, float* __restrict__ db, const T* __restrict__ dy,
                           const T* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
                           int64_t N, int64_t C) {
  __shared__ float part_w[kRowLanes][kColTile];
  __shared__ float part_b[kRowLanes][kColTile];
  const int col = threadIdx.x % kColTile, lane = threadIdx.x / kColTile;
  const int64_t c = blockIdx.x * int64_t(kColTile) + col;
  float aw = 0.0f, ab = 0.0f;
  if (c < C) {
#pragma unroll 4
    for (int64_t n = lane; n < N; n += kRowLanes) {
      const float d = to_float(dy[n * C + c]);
      const float m = kCentered ? mean[n] : 0.0f;
      aw += d * ((to_float(x[n * C + c]) - m) * rstd[n]);
      ab += d;
    }
  }
  part_w[lane][col] = aw;
  part_b[lane][col] = ab;
  __syncthreads();
  for (int half = kRowLanes / 2; half > 0; half /= 2) {
    if (lane < half) {
      part_w[lane][col] += part_w[lane + half][col];
      part_b[lane][col] += part_b[lane + half][col];
    }
    __syncthreads();
  }
  if (lane == 0 && c < C) {
    dw[c] += part_w[0][col];
    if (db != nullptr) db[c] += part_b[0][col];
  }
}

// --- launchers ---------------------------------------------------------------------------

unsigned row_blocks(int64_t N) { return unsigned((N + kRowWarps - 1) / kRowWarps); }
unsigned col_blocks(int64_t C) { return unsigned((C + kColTile - 1) / kColTile); }
// Grid x is limited to 2^31 - 1 blocks.
bool grid_fits(int64_t N, int64_t C) {
  return (N + kRowWarps - 1) / kRowWarps <= INT32_MAX && (C + kColTile - 1) / kColTile <= INT32_MAX;
}

template <bool kCentered, typename T>
Status launch_forward(T* y, float* mean, float* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C,
                      float eps, cudaStream_t stream) {
  const bool vec = aligned16(y) && aligned16(x) && aligned16(w) && (!b || aligned16(b)) && C % kVec<T> == 0;
  if (vec) {
    norm_forward_kernel<kVec<T>, kCentered>
        <<<row_blocks(N), kRowWarps * 32, 0, stream>>>(y, mean, rstd, x, w, b, N, C, eps);
  } else {
    norm_forward_kernel<1, kCentered><<<row_blocks(N), kRowWarps * 32, 0, stream>>>(y, mean, rstd, x, w, b, N, C, eps);
  }
  return launched();
}

template <bool kCentered, typename T>
Status launch_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const T* w, const float* mean,
                       const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  const bool vec = aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(w) && C % kVec<T> == 0;
  if (vec) {
    norm_backward_dx_kernel<kVec<T>, kCentered>
        <<<row_blocks(N), kRowWarps * 32, 0, stream>>>(dx, dy, x, w, mean, rstd, N, C);
  } else {
    norm_backward_dx_kernel<1, kCentered><<<row_blocks(N), kRowWarps * 32, 0, stream>>>(dx, dy, x, w, mean, rstd, N, C);
  }
  if (Status s = launched(); s != Status::kOk) return s;
  norm_param_grad_kernel<kCentered><<<col_blocks(C), kReduceThreads, 0, stream>>>(dw, db, dy, x, mean, rstd, N, C);
  return launched();
}

bool bad_sizes(int64_t N, int64_t C) { return N < 0 || C <= 0 || !grid_fits(N, C); }

}  // namespace

template <typename T>
Status layernorm_forward(T* y, float* mean, float* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C,
                         float eps, cudaStream_t stream) {
  if (bad_sizes(N, C) || !(eps >= 0.0f)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!y || !mean || !rstd || !x || !w) return Status::kInvalidArgument;
  return launch_forward<true>(y, mean, rstd, x, w, b, N, C, eps, stream);
}

template <typename T>
Status layernorm_backward(T* dx, float* dw, float* db, const T* dy, const T* x, const T* w, const float* mean,
                          const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  if (bad_sizes(N, C)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dx || !dw || !dy || !x || !w || !mean || !rstd) return Status::kInvalidArgument;
  return launch_backward<true>(dx, dw, db, dy, x, w, mean, rstd, N, C, stream);
}

template <typename T>
Status rmsnorm_forward(T* y, float* rstd, const T* x, const T* w, int64_t N, int64_t C, float eps,
                       cudaStream_t stream) {
  if (bad_sizes(N, C) || !(eps >= 0.0f)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!y || !rstd || !x || !w) return Status::kInvalidArgument;
  return launch_forward<false, T>(y, nullptr, rstd, x, w, nullptr, N, C, eps, stream);
}

template <typename T>
Status rmsnorm_backward(T* dx, float* dw, const T* dy, const T* x, const T* w, const float* rstd, int64_t N, int64_t C,
                        cudaStream_t stream) {
  if (bad_sizes(N, C)) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dx || !dw || !dy || !x || !w || !rstd) return Status::kInvalidArgument;
  return launch_backward<false, T>(dx, dw, nullptr, dy, x, w, nullptr, rstd, N, C, stream);
}

#define CASTOR_INSTANTIATE(T)                                                                                         \
  template Status layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, float,     \
                                       cudaStream_t);                                                                 \
  template Status layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*, const float*, \
                                        int64_t, int64_t, cudaStream_t);                                              \
  template Status rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int64_t, float, cudaStream_t);          \
  template Status rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t, int64_t,       \
                                      cudaStream_t);
CASTOR_INSTANTIATE(float)
CASTOR_INSTANTIATE(bf16)
CASTOR_INSTANTIATE(f16)
#undef CASTOR_INSTANTIATE

}  // namespace castor::kernels::cuda
