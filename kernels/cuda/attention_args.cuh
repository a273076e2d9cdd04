// Internal to attention.cu: the problem descriptions the flash-attention kernels see, the
// exp2-domain constants and the delta = rowsum(dO * O) kernel of the backward. Device code;
// include from attention.cu only.
#pragma once
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------
// Problem descriptions as the kernels see them (int sizes, validated on the host).

// Forward: pointers at head 0 of row 0 of sequence 0; query row i of a sequence sits at
// position past + i and sees keys [first_key, past + i].
template <typename T>
struct FwdArgs {
  T* out;
  float* lse;  // (B, H, rows) or null
  const T* q;
  const T* k;
  const T* v;
  const int32_t* key_begin;  // (B, rows) or null
  int64_t ldo, ldq, ldkv, out_seq, q_seq, kv_seq;
  int B, H, group, D, rows, past;
  float scale_log2;  // scale * log2(e): probabilities come from exp2
};

// Backward over the fused layout: qkv and dqkv rows of stride ld, dout rows of H*D.
template <typename T>
struct BwdArgs {
  T* dqkv;
  const T* dout;
  const T* qkv;
  const float* lse;    // (B, H, len)
  const float* delta;  // (B, H, len)
  const int32_t* key_begin;
  int64_t ld;
  int B, len, H, KVH, group, D;
  float scale, scale_log2;
};

// ---------------------------------------------------------------------------------------
// Shared by both paths.

// First key query position `pos` sees: key_begin clamped to [0, pos]; 0 without a mask.
__device__ __forceinline__ int first_key(const int32_t* key_begin, int64_t idx, int pos) {
  return key_begin != nullptr ? min(max(key_begin[idx], 0), pos) : 0;
}

// Smallest of the first keys of a block's n rows: where its key loop starts.
__device__ __forceinline__ int min_first_key(const int* lo, int n) {
  int m = INT_MAX;
  for (int r = 0; r < n; ++r) m = min(m, lo[r]);
  return m;
}

// The rows of one block: sequence b, head h, rows [i0, i0 + n). The row block varies
// slowest and runs last-first: under the causal mask the last rows see the most keys, so
// the heavy blocks start first and the light ones fill the tail of the grid.
struct QueryBlock {
  int b, h, i0, n;
};
__device__ __forceinline__ QueryBlock query_block(int B, int H, int rows, int block_rows) {
  const int heads = B * H;
  const int nblocks = (rows + block_rows - 1) / block_rows;
  const int blk = nblocks - 1 - int(blockIdx.x) / heads;
  const int bh = int(blockIdx.x) % heads;
  const int i0 = blk * block_rows;
  return {bh / H, bh % H, i0, min(block_rows, rows - i0)};
}

// The keys of one dK/dV block: sequence b, kv head kvh, keys [k0, k0 + n). The first key
// blocks (seen by the most queries) run first.
struct KeyBlock {
  int b, kvh, k0, n;
};
__device__ __forceinline__ KeyBlock key_block(int B, int KVH, int len, int block_keys) {
  const int heads = B * KVH;
  const int k0 = int(blockIdx.x) / heads * block_keys;
  const int bk = int(blockIdx.x) % heads;
  return {bk / KVH, bk % KVH, k0, min(block_keys, len - k0)};
}

// Per-row backward inputs of query rows [i0, i0 + n) of (b, h) for `count` tile rows: lse
// in log2 units, delta and the first key; rows past n are masked out (first key INT_MAX).
template <typename T>
__device__ void load_row_stats(float* lse2, float* delta, int* lo, const BwdArgs<T>& a, int b, int h, int i0, int n,
                               int count) {
  const int64_t base = (int64_t(b) * a.H + h) * a.len + i0;
  for (int r = threadIdx.x; r < count; r += blockDim.x) {
    const bool row = r < n;
    lse2[r] = row ? a.lse[base + r] * kLog2e : 0.0f;
    delta[r] = row ? a.delta[base + r] : 0.0f;
    lo[r] = row ? first_key(a.key_begin, int64_t(b) * a.len + i0 + r, i0 + r) : INT_MAX;
  }
}

// The block's dynamic shared memory (one declaration for every kernel of this file).
__device__ __forceinline__ unsigned char* shared_bytes() {
  extern __shared__ __align__(128) unsigned char smem[];
  return smem;
}

// Score in log2 units if key j is visible to the row (keys [lo, hi]), else -inf.
__device__ __forceinline__ float masked_score(float s, int j, int lo, int hi, float scale_log2) {
  return j >= lo && j <= hi ? s * scale_log2 : -INFINITY;
}

// delta[b, h, t] = sum_d dout * out over head h of row (b, t): one warp per (b, t, h) row,
// which is contiguous in the (B, T, H*D) layout.
template <typename T>
__global__ void delta_kernel(float* __restrict__ delta, const T* __restrict__ dout, const T* __restrict__ out,
                             int64_t nrows, int len, int H, int D) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < nrows; row += warps) {
    const T* x = dout + row * D;
    const T* y = out + row * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s = fmaf(to_float(x[d]), to_float(y[d]), s);
    s = warp_sum(s);
    if (lane == 0) {
      const int64_t bt = row / H, b = bt / len, t = bt % len;
      const int h = int(row % H);
      delta[(b * H + h) * len + t] = s;
    }
  }
}

}  // namespace
}  // namespace castor::kernels::cuda
