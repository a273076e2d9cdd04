// Rotary position embedding (see rope.cuh). The table kernel computes each (t, i) angle in
// double exactly as kernels/cpu/rope.cpp does and rounds cos/sin once, so both tables
// agree to the last bit but for rare ties. rope_apply gives each thread W consecutive pair
// indices i of one head (W = 4 floats / 8 bf16 or f16 with 16-byte accesses when the layout is
// aligned, else 1): it loads x[i..], x[i + D/2 ..] and 2W table floats, rotates in fp32.
#include "kernels/cuda/rope.cuh"

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// --- kernels -----------------------------------------------------------------------------

__global__ void rope_table_kernel(float* __restrict__ table, int64_t positions, int64_t D, double theta) {
  const int64_t half = D / 2, total = positions * half;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = k / half, i = k - t * half;
    const double inv_freq = pow(theta, -2.0 * double(i) / double(D));
    const double angle = double(t) * inv_freq;
    table[t * D + 2 * i] = float(cos(angle));
    table[t * D + 2 * i + 1] = float(sin(angle));
  }
}

// Work item p = ((row * n_heads) + h) * groups + g covers pair indices i = g W .. g W + W - 1
// of head h in row `row`; half % W == 0 (W > 1 only when the host found the layout aligned).
template <int W, typename T>
__global__ void rope_apply_kernel(T* __restrict__ x, const float* __restrict__ table, int64_t rows, int64_t seq,
                                  int64_t n_heads, int64_t half, int64_t row_stride, float sign) {
  const int64_t groups = half / W, total = rows * n_heads * groups;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = p % groups, rh = p / groups;
    const int64_t h = rh % n_heads, row = rh / n_heads;
    const int64_t i = g * W;
    T* x1 = x + row * row_stride + h * 2 * half + i;
    T* x2 = x1 + half;
    const float* cs = table + (row % seq) * 2 * half + 2 * i;
    float a[W], b[W], t[2 * W];
    load_floats<W>(x1, a);
    load_floats<W>(x2, b);
    load_floats<2 * W>(cs, t);
#pragma unroll
    for (int j = 0; j < W; ++j) {
      const float c = t[2 * j], s = sign * t[2 * j + 1];
      const float aj = a[j], bj = b[j];
      a[j] = aj * c - bj * s;
      b[j] = bj * c + aj * s;
    }
    store_floats<W>(x1, a);
    store_floats<W>(x2, b);
  }
}

}  // namespace

Status rope_table(float* table, int64_t positions, int64_t D, float theta, cudaStream_t stream) {
  if (positions < 0 || D <= 0 || D % 2 != 0 || !(theta > 0.0f)) return Status::kInvalidArgument;
  if (positions == 0) return Status::kOk;
  if (table == nullptr) return Status::kInvalidArgument;
  rope_table_kernel<<<grid_blocks(positions * (D / 2), kThreads), kThreads, 0, stream>>>(table, positions, D,
                                                                                         double(theta));
  return launched();
}

template <typename T>
Status rope_apply(T* x, const float* table, int64_t B, int64_t seq, int64_t n_heads, int64_t D, int64_t row_stride,
                  bool inverse, cudaStream_t stream) {
  if (B < 0 || seq < 0 || n_heads < 0 || D <= 0 || D % 2 != 0 || row_stride < n_heads * D) {
    return Status::kInvalidArgument;
  }
  const int64_t rows = B * seq;
  if (rows == 0 || n_heads == 0) return Status::kOk;
  if (x == nullptr || table == nullptr) return Status::kInvalidArgument;
  const int64_t half = D / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  constexpr int W = kVec<T>;
  // Every x pack starts at a multiple of W elements from x and every table pack at a
  // multiple of 2W floats from table, so 16-byte alignment of both bases suffices.
  const bool vec = aligned16(x) && aligned16(table) && half % W == 0 && row_stride % W == 0;
  const int64_t items = rows * n_heads * (vec ? half / W : half);
  if (vec) {
    rope_apply_kernel<W>
        <<<grid_blocks(items, kThreads), kThreads, 0, stream>>>(x, table, rows, seq, n_heads, half, row_stride, sign);
  } else {
    rope_apply_kernel<1>
        <<<grid_blocks(items, kThreads), kThreads, 0, stream>>>(x, table, rows, seq, n_heads, half, row_stride, sign);
  }
  return launched();
}

template Status rope_apply<float>(float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, bool,
                                  cudaStream_t);
template Status rope_apply<bf16>(bf16*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, bool, cudaStream_t);
template Status rope_apply<f16>(f16*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, bool, cudaStream_t);

}  // namespace castor::kernels::cuda
