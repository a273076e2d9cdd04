// Device helpers shared by the CUDA kernel files (include from .cu files only): fp32
// load/store of either storage type, warp and block reductions, grid sizing, and the
// launch check that turns a CUDA error into Status::kDeviceError; 16-byte packed loads and
// stores of W elements as floats, and the grid-stride driver of the element-wise kernels.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(f16 x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ f16 from_float<f16>(float x) { return __float2half_rn(x); }

// Sum over the warp (float, double or int64 sums); every lane gets the result.
template <typename U>
__device__ __forceinline__ U warp_sum(U v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block in a fixed tree (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `shared` holds 32 values; the call ends with a barrier so it may
// be reused.
template <typename U>
__device__ __forceinline__ U block_sum(U v, U* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : U(0);
  v = warp_sum(v);
  __syncthreads();
  return v;
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  v = warp_max(v);
  __syncthreads();
  return v;
}

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped.
inline unsigned grid_blocks(int64_t n, int threads, int64_t cap = 65535) {
  return unsigned(std::clamp<int64_t>((n + threads - 1) / threads, 1, cap));
}

// After a launch: kDeviceError if the launch (or an earlier asynchronous call) failed.
inline Status launched() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kDeviceError; }


// --- 16-byte packs and the flat grid-stride driver of the element-wise kernels ------------

constexpr int kPointwiseThreads = 256;

template <typename T>
struct alignas(16) Word {
  T e[16 / sizeof(T)];
};

// W consecutive elements as floats: 16-byte accesses when W fills whole words (the caller
// guarantees 16-byte alignment then), element accesses otherwise.
template <int W, typename T>
__device__ __forceinline__ void load_floats(const T* p, float (&v)[W]) {
  constexpr int kPer = int(16 / sizeof(T));
  if constexpr (W % kPer == 0) {
#pragma unroll
    for (int k = 0; k < W; k += kPer) {
      const Word<T> w = *reinterpret_cast<const Word<T>*>(p + k);
#pragma unroll
      for (int j = 0; j < kPer; ++j) v[k + j] = to_float(w.e[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = to_float(p[j]);
  }
}

template <int W, typename T>
__device__ __forceinline__ void store_floats(T* p, const float (&v)[W]) {
  constexpr int kPer = int(16 / sizeof(T));
  if constexpr (W % kPer == 0) {
#pragma unroll
    for (int k = 0; k < W; k += kPer) {
      Word<T> w;
#pragma unroll
      for (int j = 0; j < kPer; ++j) w.e[j] = from_float<T>(v[k + j]);
      *reinterpret_cast<Word<T>*>(p + k) = w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) p[j] = from_float<T>(v[j]);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Elements per 16-byte word of T.
template <typename T>
constexpr int kVec = int(16 / sizeof(T));


// op.apply<W>(i) handles elements [i, i + W); packs first, then the n % W tail one by one.
template <int W, typename Op>
__global__ void pointwise_kernel(Op op, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t packs = n / W;
  for (int64_t p = first; p < packs; p += stride) op.template apply<W>(p * W);
  for (int64_t i = packs * W + first; i < n; i += stride) op.template apply<1>(i);
}

template <int W, typename Op>
Status launch_pointwise(const Op& op, int64_t n, bool vectorised, cudaStream_t stream) {
  if (vectorised) {
    pointwise_kernel<W><<<grid_blocks(n / W, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(op, n);
  } else {
    pointwise_kernel<1><<<grid_blocks(n, kPointwiseThreads), kPointwiseThreads, 0, stream>>>(op, n);
  }
  return launched();
}

}  // namespace castor::kernels::cuda
