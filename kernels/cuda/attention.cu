// Flash-attention kernels behind attention.cuh: forward, backward dK/dV and dQ passes, and
// delta = rowsum(dO * O). Each pass exists twice with the same tiling: on tensor cores
// (WMMA 16x16x16, fp32 accumulators; 64-row tiles, 4 warps of 16 rows) for bf16 and f16 with
// D in {16, 32, 64, 80, 96, 128} and 16-byte aligned rows, and in scalar fp32 FMA (32-row
// tiles, 8 warps of 4 rows) for float and every other D <= 128. Every output element is
// written once by one block (no atomics): results do not depend on scheduling.
#include "kernels/cuda/attention.cuh"

#include <mma.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

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

// ---------------------------------------------------------------------------------------
// Scalar path (fp32 FMA, any D <= 128). A block owns 32 rows; warp w owns rows
// [4w, 4w + 4). Dot products put one key (or query) per lane against the warp's 4 rows
// (broadcast); products P V, dS K, P^T dO, dS^T Q put output column lane + 32c in lane's
// registers (c < DC = ceil(D / 32)). Probability tiles are private to their warp.

constexpr int kSRows = 32;
constexpr int kSThreads = 256;
constexpr int kSRowsPerWarp = kSRows / (kSThreads / 32);
constexpr int kSP = kSRows + 1;  // row stride of probability tiles

// Row stride of D-wide fp32 tiles: odd, so 32 lanes reading one column of 32 rows hit 32 banks.
__host__ __device__ constexpr int padded(int D) { return D | 1; }

// Bytes of dynamic shared memory: `tiles` D-wide tiles, `ptiles` probability tiles and
// `vectors` per-row vectors of 4-byte values.
__host__ __device__ constexpr size_t scalar_smem_bytes(int D, int tiles, int ptiles, int vectors) {
  return (size_t(tiles) * kSRows * padded(D) + size_t(ptiles) * kSRows * kSP + size_t(vectors) * kSRows) *
         sizeof(float);
}

// dst (32 rows of stride padded(D), fp32) = rows [0, valid) of src (row stride lds), zero after.
template <typename T>
__device__ void load_rows_f32(float* dst, const T* src, int64_t lds, int valid, int D) {
  const int ld = padded(D);
  for (int idx = threadIdx.x; idx < kSRows * D; idx += blockDim.x) {
    const int r = idx / D, c = idx - r * D;
    dst[r * ld + c] = r < valid ? to_float(src[r * lds + c]) : 0.0f;
  }
}

// s[r] = x_r . y for the warp's rows x_r (row stride ld) and one row y, D terms.
__device__ __forceinline__ void dot_rows(float (&s)[kSRowsPerWarp], const float* x, int ld, const float* y, int D) {
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) s[r] = 0.0f;
  for (int d = 0; d < D; ++d) {
    const float yd = y[d];
#pragma unroll
    for (int r = 0; r < kSRowsPerWarp; ++r) s[r] = fmaf(x[r * ld + d], yd, s[r]);
  }
}

// acc[r][c] += sum_{j < n} p[r][j] * y[j][lane + 32c]: the warp's rows of P (stride kSP)
// times n rows of a D-wide tile (stride ld).
template <int DC>
__device__ __forceinline__ void add_prob_times_rows(float (&acc)[kSRowsPerWarp][DC], const float* p, const float* y,
                                                    int ld, int n, int D) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < n; ++j) {
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + 32 * c;
      const float yd = d < D ? y[j * ld + d] : 0.0f;
#pragma unroll
      for (int r = 0; r < kSRowsPerWarp; ++r) acc[r][c] = fmaf(p[r * kSP + j], yd, acc[r][c]);
    }
  }
}

// Writes the warp's rows (those below n) of acc * scale[r] as T: row r at dst + r * ldd.
template <typename T, int DC>
__device__ void store_rows(T* dst, int64_t ldd, const float (&acc)[kSRowsPerWarp][DC],
                           const float (&scale)[kSRowsPerWarp], int first_row, int n, int D) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) {
    if (first_row + r >= n) continue;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      const int d = lane + 32 * c;
      if (d < D) dst[r * ldd + d] = from_float<T>(acc[r][c] * scale[r]);
    }
  }
}

template <typename T, int DC>
__global__ void __launch_bounds__(kSThreads, 2) forward_scalar(const FwdArgs<T> a) {
  float* smem = reinterpret_cast<float*>(shared_bytes());
  const int D = a.D, ld = padded(D);
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * kSRowsPerWarp;
  float* Qs = smem;
  float* Ks = Qs + kSRows * ld;
  float* Vs = Ks + kSRows * ld;
  float* Ps = Vs + kSRows * ld;
  int* lo = reinterpret_cast<int*>(Ps + kSRows * kSP);

  const QueryBlock w = query_block(a.B, a.H, a.rows, kSRows);
  const int kvh = w.h / a.group;
  const T* k = a.k + w.b * a.kv_seq + kvh * D;
  const T* v = a.v + w.b * a.kv_seq + kvh * D;
  load_rows_f32(Qs, a.q + w.b * a.q_seq + int64_t(w.i0) * a.ldq + w.h * D, a.ldq, w.n, D);
  for (int r = threadIdx.x; r < kSRows; r += blockDim.x)
    lo[r] = r < w.n ? first_key(a.key_begin, int64_t(w.b) * a.rows + w.i0 + r, a.past + w.i0 + r) : INT_MAX;
  __syncthreads();
  const int k_begin = min_first_key(lo, w.n), k_end = a.past + w.i0 + w.n;

  // Online softmax per row: running max m (log2 units), sum l, unnormalised output o.
  float m[kSRowsPerWarp], l[kSRowsPerWarp], o[kSRowsPerWarp][DC];
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < DC; ++c) o[r][c] = 0.0f;
  }
  for (int k0 = k_begin; k0 < k_end; k0 += kSRows) {
    const int nk = min(kSRows, k_end - k0);
    __syncthreads();  // every warp is done with the previous tile
    load_rows_f32(Ks, k + int64_t(k0) * a.ldkv, a.ldkv, nk, D);
    load_rows_f32(Vs, v + int64_t(k0) * a.ldkv, a.ldkv, nk, D);
    __syncthreads();
    float s[kSRowsPerWarp];
    dot_rows(s, Qs + row0 * ld, ld, Ks + lane * ld, D);  // key k0 + lane
#pragma unroll
    for (int r = 0; r < kSRowsPerWarp; ++r) {
      const int i = row0 + r;
      const float x = masked_score(s[r], k0 + lane, lo[i], a.past + w.i0 + i, a.scale_log2);
      const float m_new = fmaxf(m[r], warp_max(x));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no visible key yet: all p are 0
      const float alpha = exp2f(m[r] - m_use), p = exp2f(x - m_use);
      l[r] = l[r] * alpha + warp_sum(p);
      m[r] = m_new;
      Ps[i * kSP + lane] = p;
#pragma unroll
      for (int c = 0; c < DC; ++c) o[r][c] *= alpha;
    }
    __syncwarp();
    add_prob_times_rows<DC>(o, Ps + row0 * kSP, Vs, ld, nk, D);
    __syncwarp();
  }

  float inv_l[kSRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) {
    const int i = row0 + r;
    inv_l[r] = i < w.n ? 1.0f / l[r] : 0.0f;
    if (i < w.n && a.lse != nullptr && lane == 0)
      a.lse[(int64_t(w.b) * a.H + w.h) * a.rows + w.i0 + i] = m[r] * kLn2 + logf(l[r]);
  }
  store_rows<T, DC>(a.out + w.b * a.out_seq + int64_t(w.i0 + row0) * a.ldo + w.h * D, a.ldo, o, inv_l, row0, w.n, D);
}

template <typename T, int DC>
__global__ void __launch_bounds__(kSThreads, 2) dq_scalar(const BwdArgs<T> a) {
  float* smem = reinterpret_cast<float*>(shared_bytes());
  const int D = a.D, ld = padded(D);
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * kSRowsPerWarp;
  float* Qs = smem;
  float* dOs = Qs + kSRows * ld;
  float* Ks = dOs + kSRows * ld;
  float* Vs = Ks + kSRows * ld;
  float* dSs = Vs + kSRows * ld;
  float* lse2 = dSs + kSRows * kSP;
  float* delta = lse2 + kSRows;
  int* lo = reinterpret_cast<int*>(delta + kSRows);

  const QueryBlock w = query_block(a.B, a.H, a.len, kSRows);
  const int kvh = w.h / a.group;
  const int64_t seq = int64_t(w.b) * a.len, ldo = int64_t(a.H) * D;
  const T* k = a.qkv + seq * a.ld + (a.H + kvh) * D;
  const T* v = a.qkv + seq * a.ld + (a.H + a.KVH + kvh) * D;
  load_rows_f32(Qs, a.qkv + (seq + w.i0) * a.ld + w.h * D, a.ld, w.n, D);
  load_rows_f32(dOs, a.dout + (seq + w.i0) * ldo + w.h * D, ldo, w.n, D);
  load_row_stats(lse2, delta, lo, a, w.b, w.h, w.i0, w.n, kSRows);
  __syncthreads();
  const int k_begin = min_first_key(lo, w.n), k_end = w.i0 + w.n;

  float dq[kSRowsPerWarp][DC] = {};
  for (int k0 = k_begin; k0 < k_end; k0 += kSRows) {
    const int nk = min(kSRows, k_end - k0);
    __syncthreads();
    load_rows_f32(Ks, k + k0 * a.ld, a.ld, nk, D);
    load_rows_f32(Vs, v + k0 * a.ld, a.ld, nk, D);
    __syncthreads();
    // dS = P * (dP - delta) for the warp's rows against key k0 + lane.
    float s[kSRowsPerWarp], dp[kSRowsPerWarp];
    dot_rows(s, Qs + row0 * ld, ld, Ks + lane * ld, D);
    dot_rows(dp, dOs + row0 * ld, ld, Vs + lane * ld, D);
#pragma unroll
    for (int r = 0; r < kSRowsPerWarp; ++r) {
      const int i = row0 + r;
      const float x = masked_score(s[r], k0 + lane, lo[i], w.i0 + i, a.scale_log2);
      const float p = x == -INFINITY ? 0.0f : exp2f(x - lse2[i]);
      dSs[i * kSP + lane] = p * (dp[r] - delta[i]);
    }
    __syncwarp();
    add_prob_times_rows<DC>(dq, dSs + row0 * kSP, Ks, ld, nk, D);  // dQ += dS K
    __syncwarp();
  }
  float scale[kSRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) scale[r] = a.scale;
  store_rows<T, DC>(a.dqkv + (seq + w.i0 + row0) * a.ld + w.h * D, a.ld, dq, scale, row0, w.n, D);
}

template <typename T, int DC>
__global__ void __launch_bounds__(kSThreads, 2) dkdv_scalar(const BwdArgs<T> a) {
  float* smem = reinterpret_cast<float*>(shared_bytes());
  const int D = a.D, ld = padded(D);
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * kSRowsPerWarp;
  float* Ks = smem;
  float* Vs = Ks + kSRows * ld;
  float* Qs = Vs + kSRows * ld;
  float* dOs = Qs + kSRows * ld;
  float* Pt = dOs + kSRows * ld;  // P^T: key rows, query columns
  float* dSt = Pt + kSRows * kSP;
  float* lse2 = dSt + kSRows * kSP;
  float* delta = lse2 + kSRows;
  int* lo = reinterpret_cast<int*>(delta + kSRows);

  const KeyBlock kb = key_block(a.B, a.KVH, a.len, kSRows);
  const int64_t seq = int64_t(kb.b) * a.len, ldo = int64_t(a.H) * D;
  T* dk_out = a.dqkv + (seq + kb.k0 + row0) * a.ld + (a.H + kb.kvh) * D;
  T* dv_out = a.dqkv + (seq + kb.k0 + row0) * a.ld + (a.H + a.KVH + kb.kvh) * D;
  load_rows_f32(Ks, a.qkv + (seq + kb.k0) * a.ld + (a.H + kb.kvh) * D, a.ld, kb.n, D);
  load_rows_f32(Vs, a.qkv + (seq + kb.k0) * a.ld + (a.H + a.KVH + kb.kvh) * D, a.ld, kb.n, D);

  // Query heads of this kv head in order, then query tiles from the block's first key on
  // (earlier queries see none of its keys): a fixed summation order for dK and dV.
  float dk[kSRowsPerWarp][DC] = {}, dv[kSRowsPerWarp][DC] = {};
  for (int h = kb.kvh * a.group; h < (kb.kvh + 1) * a.group; ++h) {
    for (int q0 = kb.k0; q0 < a.len; q0 += kSRows) {
      const int nq = min(kSRows, a.len - q0);
      __syncthreads();  // every warp is done with the previous tile (and K, V are loaded)
      load_rows_f32(Qs, a.qkv + (seq + q0) * a.ld + h * D, a.ld, nq, D);
      load_rows_f32(dOs, a.dout + (seq + q0) * ldo + h * D, ldo, nq, D);
      load_row_stats(lse2, delta, lo, a, kb.b, h, q0, nq, kSRows);
      __syncthreads();
      // P^T and dS^T for the warp's keys against query q0 + lane.
      float s[kSRowsPerWarp], dp[kSRowsPerWarp];
      dot_rows(s, Ks + row0 * ld, ld, Qs + lane * ld, D);
      dot_rows(dp, Vs + row0 * ld, ld, dOs + lane * ld, D);
#pragma unroll
      for (int r = 0; r < kSRowsPerWarp; ++r) {
        const int jt = row0 + r;
        const float x = masked_score(s[r], kb.k0 + jt, lo[lane], q0 + lane, a.scale_log2);
        const float p = x == -INFINITY ? 0.0f : exp2f(x - lse2[lane]);
        Pt[jt * kSP + lane] = p;
        dSt[jt * kSP + lane] = p * (dp[r] - delta[lane]);
      }
      __syncwarp();
      add_prob_times_rows<DC>(dv, Pt + row0 * kSP, dOs, ld, nq, D);  // dV += P^T dO
      add_prob_times_rows<DC>(dk, dSt + row0 * kSP, Qs, ld, nq, D);  // dK += dS^T Q
      __syncwarp();
    }
  }
  float scale[kSRowsPerWarp], ones[kSRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSRowsPerWarp; ++r) {
    scale[r] = a.scale;
    ones[r] = 1.0f;
  }
  store_rows<T, DC>(dk_out, a.ld, dk, scale, row0, kb.n, D);
  store_rows<T, DC>(dv_out, a.ld, dv, ones, row0, kb.n, D);
}

// ---------------------------------------------------------------------------------------
// Tensor-core path (T = bf16 or f16, D % 16 == 0). A block owns 64 rows, warp w rows
// [16w, 16w + 16). Tiles are staged in shared memory with rows padded by 8 elements
// (conflict-free fragment loads). WMMA leaves the register layout of accumulators opaque;
// elementwise work on them (masking, exp, rescaling) uses each element's (row, column),
// found once per warp by loading a matrix whose entries are their own index (acc_positions).

constexpr int kWRows = 64;
constexpr int kWThreads = 128;
constexpr int kWLdp = kWRows + 8;  // row stride of T probability tiles
constexpr int kWLds = kWRows + 4;  // row stride of the fp32 score tile

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;  // B^T of row-major rows
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
constexpr int kCElems = FragC::num_elements;

__host__ __device__ constexpr size_t align128(size_t n) { return (n + 127) / 128 * 128; }

// Blocks per SM the register budget is sized for (__launch_bounds__; 128 threads a block:
// 4 blocks leave 128 registers a thread, 3 leave 168, 2 leave 255). Above D = 64 shared
// memory allows no more than 2 anyway.
template <int D>
constexpr int kFwdMinBlocks = D <= 64 ? 4 : 2;
template <int D>
constexpr int kBwdMinBlocks = D <= 64 ? 3 : 2;

// Score chunks (16 x 16 accumulators, 4 per 64-key tile) computed per pass: as many as the
// registers left by the output accumulators (O; dQ; dK and dV) hold.
template <int D>
constexpr int kFwdScoreGroup = D <= 64 ? 4 : 2;
template <int D>
constexpr int kBwdScoreGroup = D <= 64 ? 2 : 1;

// Shared-memory layout (byte offsets, 128-aligned) of the tensor-core kernels: `tiles`
// 64 x (D + 8) tiles of 16-bit elements (bf16 or f16), then per-kernel extras.
constexpr size_t kWElemBytes = 2;
static_assert(sizeof(bf16) == kWElemBytes && sizeof(f16) == kWElemBytes);
template <int D>
struct WLayout {
  static constexpr int ld = D + 8;
  static constexpr size_t tile = align128(size_t(kWRows) * ld * kWElemBytes);
  static constexpr size_t ptile = align128(size_t(kWRows) * kWLdp * kWElemBytes);
  static constexpr size_t stile = align128(size_t(kWRows) * kWLds * sizeof(float));
  static constexpr size_t vec = align128(size_t(kWRows) * sizeof(float));
  // forward: Q, K, V | scores (fp32) | P | alpha, 1/l | first keys
  static constexpr size_t fwd_s = 3 * tile, fwd_p = fwd_s + stile, fwd_stats = fwd_p + ptile,
                          fwd_lo = fwd_stats + 2 * vec, fwd_bytes = fwd_lo + vec;
  // dQ: Q, dO, K, V | dS | lse2, delta, first keys
  static constexpr size_t dq_ds = 4 * tile, dq_stats = dq_ds + ptile, dq_bytes = dq_stats + 3 * vec;
  // dK/dV: K, V, Q, dO | P^T, dS^T | lse2, delta, first keys
  static constexpr size_t kv_p = 4 * tile, kv_stats = kv_p + 2 * ptile, kv_bytes = kv_stats + 3 * vec;
};

// dst (64 x (D + 8)) = rows [0, valid) of src (row stride lds, 16-byte aligned rows), zero
// rows after, in 16-byte copies.
template <int D, typename T>
__device__ void load_tile(T* dst, const T* src, int64_t lds, int valid) {
  constexpr int chunks = D / 8, ld = D + 8;
  for (int idx = threadIdx.x; idx < kWRows * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = idx - r * chunks;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (r < valid) x = *reinterpret_cast<const uint4*>(src + r * lds + c * 8);
    *reinterpret_cast<uint4*>(dst + r * ld + c * 8) = x;
  }
}

// Rows [0, valid) of src (64 x (D + 8)) to dst (row stride ldd, 16-byte aligned rows).
template <int D, typename T>
__device__ void store_tile(T* dst, int64_t ldd, const T* src, int valid) {
  constexpr int chunks = D / 8, ld = D + 8;
  for (int idx = threadIdx.x; idx < valid * chunks; idx += blockDim.x) {
    const int r = idx / chunks, c = idx - r * chunks;
    *reinterpret_cast<uint4*>(dst + r * ldd + c * 8) = *reinterpret_cast<const uint4*>(src + r * ld + c * 8);
  }
}

// pos[e] = 16 * row + column of accumulator element e in its 16 x 16 tile (the same for
// every FragC of the warp). scratch: 256 floats of the warp, 32-byte aligned.
__device__ void acc_positions(int (&pos)[kCElems], float* scratch) {
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < 256; i += 32) scratch[i] = float(i);
  __syncwarp();
  FragC f;
  wmma::load_matrix_sync(f, scratch, 16, wmma::mem_row_major);
#pragma unroll
  for (int e = 0; e < kCElems; ++e) pos[e] = int(f.x[e]);
  __syncwarp();
}

// acc[g] = A B_g^T: A the warp's 16 rows of a tile (at a), B_g the 16 rows of a tile at
// b + 16 g rows; each a 16 x 16 block of scores.
template <int D, int G, typename T>
__device__ __forceinline__ void scores(FragC (&acc)[G], const T* a, const T* b) {
  constexpr int ld = D + 8;
#pragma unroll
  for (int g = 0; g < G; ++g) wmma::fill_fragment(acc[g], 0.0f);
#pragma unroll 1
  for (int d0 = 0; d0 < D; d0 += 16) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, a + d0, ld);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      FragBt<T> fb;
      wmma::load_matrix_sync(fb, b + g * 16 * ld + d0, ld);
      wmma::mma_sync(acc[g], fa, fb, acc[g]);
    }
  }
}

// acc[n] += P Y[:, 16n : 16n + 16]: P the warp's 16 x 64 probabilities (row stride kWLdp),
// Y a 64 x D tile.
template <int D, typename T>
__device__ __forceinline__ void add_prob_times_tile(FragC (&acc)[D / 16], const T* p, const T* y) {
  constexpr int ld = D + 8;
#pragma unroll 1
  for (int kk = 0; kk < kWRows; kk += 16) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, p + kk, kWLdp);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragB<T> fb;
      wmma::load_matrix_sync(fb, y + kk * ld + n * 16, ld);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Writes acc * scale as T into the warp's 16 rows of a tile (at dst, row stride D + 8).
template <int D, typename T>
__device__ __forceinline__ void acc_to_tile(T* dst, const FragC (&acc)[D / 16], const int (&pos)[kCElems],
                                            float scale) {
  constexpr int ld = D + 8;
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
#pragma unroll
    for (int e = 0; e < kCElems; ++e)
      dst[(pos[e] >> 4) * ld + n * 16 + (pos[e] & 15)] = from_float<T>(acc[n].x[e] * scale);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWThreads, kFwdMinBlocks<D>) forward_wmma(const FwdArgs<T> a) {
  using L = WLayout<D>;
  constexpr int ld = L::ld, G = kFwdScoreGroup<D>;
  unsigned char* smem = shared_bytes();
  const int lane = threadIdx.x & 31, row0 = (threadIdx.x >> 5) * 16;
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = reinterpret_cast<T*>(smem + L::tile);
  T* Vs = reinterpret_cast<T*>(smem + 2 * L::tile);
  float* Sw = reinterpret_cast<float*>(smem + L::fwd_s) + row0 * kWLds;  // this warp's rows
  T* Pw = reinterpret_cast<T*>(smem + L::fwd_p) + row0 * kWLdp;
  float* alpha_s = reinterpret_cast<float*>(smem + L::fwd_stats);
  float* inv_l_s = reinterpret_cast<float*>(smem + L::fwd_stats + L::vec);
  int* lo = reinterpret_cast<int*>(smem + L::fwd_lo);

  const QueryBlock w = query_block(a.B, a.H, a.rows, kWRows);
  const int kvh = w.h / a.group;
  const T* k = a.k + w.b * a.kv_seq + kvh * D;
  const T* v = a.v + w.b * a.kv_seq + kvh * D;
  load_tile<D>(Qs, a.q + w.b * a.q_seq + int64_t(w.i0) * a.ldq + w.h * D, a.ldq, w.n);
  for (int r = threadIdx.x; r < kWRows; r += blockDim.x)
    lo[r] = r < w.n ? first_key(a.key_begin, int64_t(w.b) * a.rows + w.i0 + r, a.past + w.i0 + r) : INT_MAX;
  int pos[kCElems];
  acc_positions(pos, Sw);
  __syncthreads();
  const int k_begin = min_first_key(lo, w.n), k_end = a.past + w.i0 + w.n;

  // Softmax state of row i = row0 + lane / 2, kept by the lane pair that splits its columns.
  const int half = lane & 1, i = row0 + (lane >> 1);
  const int row_lo = lo[i], row_hi = a.past + w.i0 + i;
  const float* srow = Sw + (lane >> 1) * kWLds;
  T* prow = Pw + (lane >> 1) * kWLdp;
  float m = -INFINITY, l = 0.0f;
  FragC o[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(o[n], 0.0f);

  for (int k0 = k_begin; k0 < k_end; k0 += kWRows) {
    __syncthreads();  // every warp is done with the previous tile
    load_tile<D>(Ks, k + int64_t(k0) * a.ldkv, a.ldkv, min(kWRows, k_end - k0));
    load_tile<D>(Vs, v + int64_t(k0) * a.ldkv, a.ldkv, min(kWRows, k_end - k0));
    __syncthreads();
    // S = Q K^T for the warp's rows, staged in shared memory for the row-wise softmax.
#pragma unroll
    for (int g0 = 0; g0 < 4; g0 += G) {
      FragC s[G];
      scores<D, G>(s, Qs + row0 * ld, Ks + g0 * 16 * ld);
#pragma unroll
      for (int g = 0; g < G; ++g) wmma::store_matrix_sync(Sw + (g0 + g) * 16, s[g], kWLds, wmma::mem_row_major);
    }
    __syncwarp();
    float mx = -INFINITY;
    for (int c = half; c < kWRows; c += 2) mx = fmaxf(mx, masked_score(srow[c], k0 + c, row_lo, row_hi, a.scale_log2));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no visible key yet: all p are 0
    const float alpha = exp2f(m - m_use);
    float sum = 0.0f;
    for (int c = half; c < kWRows; c += 2) {
      const float p = exp2f(masked_score(srow[c], k0 + c, row_lo, row_hi, a.scale_log2) - m_use);
      sum += p;
      prow[c] = from_float<T>(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    if (half == 0) alpha_s[i] = alpha;
    __syncwarp();
    // O = alpha O + P V
    float alpha_e[kCElems];
#pragma unroll
    for (int e = 0; e < kCElems; ++e) alpha_e[e] = alpha_s[row0 + (pos[e] >> 4)];
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
#pragma unroll
      for (int e = 0; e < kCElems; ++e) o[n].x[e] *= alpha_e[e];
    }
    add_prob_times_tile<D>(o, Pw, Vs);
  }

  if (half == 0) {
    inv_l_s[i] = i < w.n ? 1.0f / l : 0.0f;
    if (i < w.n && a.lse != nullptr) a.lse[(int64_t(w.b) * a.H + w.h) * a.rows + w.i0 + i] = m * kLn2 + logf(l);
  }
  // O / l out through the score tile, up to 4 column blocks at a time.
  T* out = a.out + w.b * a.out_seq + int64_t(w.i0 + row0) * a.ldo + w.h * D;
#pragma unroll
  for (int n0 = 0; n0 < D / 16; n0 += 4) {
    constexpr int kMaxBlocks = 4;
    const int cols = 16 * min(kMaxBlocks, D / 16 - n0);
    __syncwarp();  // previous reads of Sw (and inv_l_s writes) are done
#pragma unroll
    for (int n = 0; n < kMaxBlocks; ++n)
      if (n0 + n < D / 16) wmma::store_matrix_sync(Sw + n * 16, o[n0 + n], kWLds, wmma::mem_row_major);
    __syncwarp();
    for (int idx = lane; idx < 16 * cols; idx += 32) {
      const int r = idx / cols, c = idx - r * cols;
      if (row0 + r < w.n) out[r * a.ldo + n0 * 16 + c] = from_float<T>(Sw[r * kWLds + c] * inv_l_s[row0 + r]);
    }
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWThreads, kBwdMinBlocks<D>) dq_wmma(const BwdArgs<T> a) {
  using L = WLayout<D>;
  constexpr int ld = L::ld, G = kBwdScoreGroup<D>;
  unsigned char* smem = shared_bytes();
  const int row0 = (threadIdx.x >> 5) * 16;
  T* Qs = reinterpret_cast<T*>(smem);
  T* dOs = reinterpret_cast<T*>(smem + L::tile);
  T* Ks = reinterpret_cast<T*>(smem + 2 * L::tile);
  T* Vs = reinterpret_cast<T*>(smem + 3 * L::tile);
  T* dSw = reinterpret_cast<T*>(smem + L::dq_ds) + row0 * kWLdp;
  float* lse2 = reinterpret_cast<float*>(smem + L::dq_stats);
  float* delta = reinterpret_cast<float*>(smem + L::dq_stats + L::vec);
  int* lo = reinterpret_cast<int*>(smem + L::dq_stats + 2 * L::vec);

  const QueryBlock w = query_block(a.B, a.H, a.len, kWRows);
  const int kvh = w.h / a.group;
  const int64_t seq = int64_t(w.b) * a.len, ldo = int64_t(a.H) * D;
  const T* k = a.qkv + seq * a.ld + (a.H + kvh) * D;
  const T* v = a.qkv + seq * a.ld + (a.H + a.KVH + kvh) * D;
  load_tile<D>(Qs, a.qkv + (seq + w.i0) * a.ld + w.h * D, a.ld, w.n);
  load_tile<D>(dOs, a.dout + (seq + w.i0) * ldo + w.h * D, ldo, w.n);
  load_row_stats(lse2, delta, lo, a, w.b, w.h, w.i0, w.n, kWRows);
  int pos[kCElems];
  acc_positions(pos, reinterpret_cast<float*>(dSw));  // 1 KiB of the warp's 2.25 KiB dS rows
  __syncthreads();
  const int k_begin = min_first_key(lo, w.n), k_end = w.i0 + w.n;

  FragC dq[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(dq[n], 0.0f);
  for (int k0 = k_begin; k0 < k_end; k0 += kWRows) {
    __syncthreads();
    load_tile<D>(Ks, k + k0 * a.ld, a.ld, min(kWRows, k_end - k0));
    load_tile<D>(Vs, v + k0 * a.ld, a.ld, min(kWRows, k_end - k0));
    __syncthreads();
    // dS = P * (dP - delta), P = exp2(S scale log2e - lse2), for the warp's rows.
#pragma unroll
    for (int g0 = 0; g0 < 4; g0 += G) {
      FragC s[G], dp[G];
      scores<D, G>(s, Qs + row0 * ld, Ks + g0 * 16 * ld);
      scores<D, G>(dp, dOs + row0 * ld, Vs + g0 * 16 * ld);
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int e = 0; e < kCElems; ++e) {
          const int r = pos[e] >> 4, c = (g0 + g) * 16 + (pos[e] & 15), i = row0 + r;
          const float x = masked_score(s[g].x[e], k0 + c, lo[i], w.i0 + i, a.scale_log2);
          const float p = x == -INFINITY ? 0.0f : exp2f(x - lse2[i]);
          dSw[r * kWLdp + c] = from_float<T>(p * (dp[g].x[e] - delta[i]));
        }
      }
    }
    __syncwarp();
    add_prob_times_tile<D>(dq, dSw, Ks);  // dQ += dS K
  }
  // The warp's Q rows are its own: overwrite them with dQ, then copy the tile out.
  __syncwarp();
  acc_to_tile<D>(Qs + row0 * ld, dq, pos, a.scale);
  __syncthreads();
  store_tile<D>(a.dqkv + (seq + w.i0) * a.ld + w.h * D, a.ld, Qs, w.n);
}

template <typename T, int D>
__global__ void __launch_bounds__(kWThreads, kBwdMinBlocks<D>) dkdv_wmma(const BwdArgs<T> a) {
  using L = WLayout<D>;
  constexpr int ld = L::ld, G = kBwdScoreGroup<D>;
  unsigned char* smem = shared_bytes();
  const int row0 = (threadIdx.x >> 5) * 16;
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = reinterpret_cast<T*>(smem + L::tile);
  T* Qs = reinterpret_cast<T*>(smem + 2 * L::tile);
  T* dOs = reinterpret_cast<T*>(smem + 3 * L::tile);
  T* Ptw = reinterpret_cast<T*>(smem + L::kv_p) + row0 * kWLdp;  // P^T: key rows, query columns
  T* dStw = reinterpret_cast<T*>(smem + L::kv_p + L::ptile) + row0 * kWLdp;
  float* lse2 = reinterpret_cast<float*>(smem + L::kv_stats);
  float* delta = reinterpret_cast<float*>(smem + L::kv_stats + L::vec);
  int* lo = reinterpret_cast<int*>(smem + L::kv_stats + 2 * L::vec);

  const KeyBlock kb = key_block(a.B, a.KVH, a.len, kWRows);
  const int64_t seq = int64_t(kb.b) * a.len, ldo = int64_t(a.H) * D;
  const int64_t k_col = (a.H + kb.kvh) * D, v_col = (a.H + a.KVH + kb.kvh) * D;
  load_tile<D>(Ks, a.qkv + (seq + kb.k0) * a.ld + k_col, a.ld, kb.n);
  load_tile<D>(Vs, a.qkv + (seq + kb.k0) * a.ld + v_col, a.ld, kb.n);
  int pos[kCElems];
  acc_positions(pos, reinterpret_cast<float*>(Ptw));

  // Query heads of this kv head in order, then query tiles from the block's first key on
  // (earlier queries see none of its keys): a fixed summation order for dK and dV.
  FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  for (int h = kb.kvh * a.group; h < (kb.kvh + 1) * a.group; ++h) {
    for (int q0 = kb.k0; q0 < a.len; q0 += kWRows) {
      const int nq = min(kWRows, a.len - q0);
      __syncthreads();  // every warp is done with the previous tile (and K, V are loaded)
      load_tile<D>(Qs, a.qkv + (seq + q0) * a.ld + h * D, a.ld, nq);
      load_tile<D>(dOs, a.dout + (seq + q0) * ldo + h * D, ldo, nq);
      load_row_stats(lse2, delta, lo, a, kb.b, h, q0, nq, kWRows);
      __syncthreads();
      // S^T = K Q^T and dP^T = V dO^T for the warp's keys; element (r, c): key row0 + r,
      // query c of the tile.
#pragma unroll
      for (int g0 = 0; g0 < 4; g0 += G) {
        FragC st[G], dpt[G];
        scores<D, G>(st, Ks + row0 * ld, Qs + g0 * 16 * ld);
        scores<D, G>(dpt, Vs + row0 * ld, dOs + g0 * 16 * ld);
#pragma unroll
        for (int g = 0; g < G; ++g) {
#pragma unroll
          for (int e = 0; e < kCElems; ++e) {
            const int r = pos[e] >> 4, c = (g0 + g) * 16 + (pos[e] & 15);
            const float x = masked_score(st[g].x[e], kb.k0 + row0 + r, lo[c], q0 + c, a.scale_log2);
            const float p = x == -INFINITY ? 0.0f : exp2f(x - lse2[c]);
            Ptw[r * kWLdp + c] = from_float<T>(p);
            dStw[r * kWLdp + c] = from_float<T>(p * (dpt[g].x[e] - delta[c]));
          }
        }
      }
      __syncwarp();
      add_prob_times_tile<D>(dv, Ptw, dOs);  // dV += P^T dO
      add_prob_times_tile<D>(dk, dStw, Qs);  // dK += dS^T Q
    }
  }
  // Q and dO tiles are free now: stage dK and dV there, then copy both tiles out.
  __syncthreads();
  acc_to_tile<D>(Qs + row0 * ld, dk, pos, a.scale);
  acc_to_tile<D>(dOs + row0 * ld, dv, pos, 1.0f);
  __syncthreads();
  store_tile<D>(a.dqkv + (seq + kb.k0) * a.ld + k_col, a.ld, Qs, kb.n);
  store_tile<D>(a.dqkv + (seq + kb.k0) * a.ld + v_col, a.ld, dOs, kb.n);
}

// ---------------------------------------------------------------------------------------
// Host side.

bool valid_shape(const cpu::AttentionShape& s) {
  return s.B > 0 && s.T > 0 && s.H > 0 && s.KVH > 0 && s.D > 0 && s.H % s.KVH == 0 && s.T <= INT_MAX &&
         (s.H + 2 * s.KVH) * s.D <= INT_MAX;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Head dims with a tensor-core kernel (others run the scalar path).
bool wmma_head_dim(int64_t D) { return D == 16 || D == 32 || D == 64 || D == 80 || D == 96 || D == 128; }

// Launches `kernel` on `blocks` blocks; opts into more than 48 KiB of dynamic shared memory
// when it needs it. kNotSupported if the grid or the shared memory is too large.
template <typename Arg>
Status launch(void (*kernel)(Arg), int64_t blocks, int threads, size_t smem, cudaStream_t stream, const Arg& arg) {
  if (blocks < 1 || blocks > INT_MAX) return Status::kNotSupported;
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so that later launches do not report it
    return Status::kNotSupported;
  }
  kernel<<<unsigned(blocks), threads, smem, stream>>>(arg);
  return launched();
}

template <typename T, int D>
Status launch_forward_wmma(const FwdArgs<T>& a, cudaStream_t stream) {
  return launch(forward_wmma<T, D>, int64_t(a.B) * a.H * ceil_div(a.rows, kWRows), kWThreads, WLayout<D>::fwd_bytes,
                stream, a);
}

template <typename T, int D>
Status launch_backward_wmma(const BwdArgs<T>& a, cudaStream_t stream) {
  const Status st = launch(dkdv_wmma<T, D>, int64_t(a.B) * a.KVH * ceil_div(a.len, kWRows), kWThreads,
                           WLayout<D>::kv_bytes, stream, a);
  if (st != Status::kOk) return st;
  return launch(dq_wmma<T, D>, int64_t(a.B) * a.H * ceil_div(a.len, kWRows), kWThreads, WLayout<D>::dq_bytes, stream,
                a);
}

template <typename T, int DC>
Status launch_forward_scalar(const FwdArgs<T>& a, cudaStream_t stream) {
  return launch(forward_scalar<T, DC>, int64_t(a.B) * a.H * ceil_div(a.rows, kSRows), kSThreads,
                scalar_smem_bytes(a.D, 3, 1, 1), stream, a);
}

template <typename T, int DC>
Status launch_backward_scalar(const BwdArgs<T>& a, cudaStream_t stream) {
  const Status st = launch(dkdv_scalar<T, DC>, int64_t(a.B) * a.KVH * ceil_div(a.len, kSRows), kSThreads,
                           scalar_smem_bytes(a.D, 4, 2, 3), stream, a);
  if (st != Status::kOk) return st;
  return launch(dq_scalar<T, DC>, int64_t(a.B) * a.H * ceil_div(a.len, kSRows), kSThreads,
                scalar_smem_bytes(a.D, 4, 1, 3), stream, a);
}

template <typename T>
Status run_forward(const FwdArgs<T>& a, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    if (tensor_cores) {
      switch (a.D) {
        case 16:
          return launch_forward_wmma<T, 16>(a, stream);
        case 32:
          return launch_forward_wmma<T, 32>(a, stream);
        case 64:
          return launch_forward_wmma<T, 64>(a, stream);
        case 80:
          return launch_forward_wmma<T, 80>(a, stream);
        case 96:
          return launch_forward_wmma<T, 96>(a, stream);
        case 128:
          return launch_forward_wmma<T, 128>(a, stream);
        default:
          break;
      }
    }
  }
  switch ((a.D + 31) / 32) {
    case 1:
      return launch_forward_scalar<T, 1>(a, stream);
    case 2:
      return launch_forward_scalar<T, 2>(a, stream);
    case 3:
      return launch_forward_scalar<T, 3>(a, stream);
    case 4:
      return launch_forward_scalar<T, 4>(a, stream);
    default:
      return Status::kNotSupported;
  }
}

template <typename T>
Status run_backward(const BwdArgs<T>& a, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    if (tensor_cores) {
      switch (a.D) {
        case 16:
          return launch_backward_wmma<T, 16>(a, stream);
        case 32:
          return launch_backward_wmma<T, 32>(a, stream);
        case 64:
          return launch_backward_wmma<T, 64>(a, stream);
        case 80:
          return launch_backward_wmma<T, 80>(a, stream);
        case 96:
          return launch_backward_wmma<T, 96>(a, stream);
        case 128:
          return launch_backward_wmma<T, 128>(a, stream);
        default:
          break;
      }
    }
  }
  switch ((a.D + 31) / 32) {
    case 1:
      return launch_backward_scalar<T, 1>(a, stream);
    case 2:
      return launch_backward_scalar<T, 2>(a, stream);
    case 3:
      return launch_backward_scalar<T, 3>(a, stream);
    case 4:
      return launch_backward_scalar<T, 4>(a, stream);
    default:
      return Status::kNotSupported;
  }
}

}  // namespace

size_t attention_scratch_bytes(const cpu::AttentionShape& s) {
  if (!valid_shape(s)) return 0;
  return size_t(s.B * s.H * s.T) * sizeof(float);
}

template <typename T>
Status attention_rows(const AttentionRows<T>& a, cudaStream_t stream) {
  if (a.B < 1 || a.rows < 1 || a.past < 0 || a.H < 1 || a.KVH < 1 || a.D < 1 || a.H % a.KVH != 0)
    return Status::kInvalidArgument;
  if (a.out == nullptr || a.q == nullptr || a.k == nullptr || a.v == nullptr) return Status::kInvalidArgument;
  if (a.ldo < a.H * a.D || a.ldq < a.H * a.D || a.ldkv < a.KVH * a.D || a.out_seq < 0 || a.q_seq < 0 || a.kv_seq < 0)
    return Status::kInvalidArgument;
  // Positions (and one tile past them) and column offsets are ints inside the kernels.
  if (a.past + a.rows > INT_MAX - 2 * kWRows || a.B > INT_MAX || a.H * a.D > INT_MAX) return Status::kInvalidArgument;
  if (a.D > kAttentionMaxHeadDim) return Status::kNotSupported;

  FwdArgs<T> f;
  f.out = a.out;
  f.lse = a.lse;
  f.q = a.q;
  f.k = a.k;
  f.v = a.v;
  f.key_begin = a.key_begin;
  f.ldo = a.ldo;
  f.ldq = a.ldq;
  f.ldkv = a.ldkv;
  f.out_seq = a.out_seq;
  f.q_seq = a.q_seq;
  f.kv_seq = a.kv_seq;
  f.B = int(a.B);
  f.H = int(a.H);
  f.group = int(a.H / a.KVH);
  f.D = int(a.D);
  f.rows = int(a.rows);
  f.past = int(a.past);
  f.scale_log2 = kLog2e / std::sqrt(static_cast<float>(a.D));
  // 16-byte tile loads need every row of every sequence 16-byte aligned: base pointers,
  // row strides and sequence strides (8 bf16 or f16 elements).
  const bool tensor_cores = wmma_head_dim(a.D) && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
                            a.ldq % 8 == 0 && a.ldkv % 8 == 0 && a.q_seq % 8 == 0 && a.kv_seq % 8 == 0;
  return run_forward(f, tensor_cores, stream);
}

template <typename T>
Status attention_forward(T* out, float* lse, const T* qkv, const cpu::AttentionShape& s, void* /*scratch*/,
                         size_t /*scratch_bytes*/, const int32_t* key_begin, cudaStream_t stream) {
  if (!valid_shape(s) || out == nullptr || lse == nullptr || qkv == nullptr) return Status::kInvalidArgument;
  const int64_t ld = (s.H + 2 * s.KVH) * s.D;  // qkv row stride
  AttentionRows<T> a;
  a.out = out;
  a.ldo = s.H * s.D;
  a.out_seq = s.T * a.ldo;
  a.lse = lse;
  a.q = qkv;
  a.k = qkv + s.H * s.D;
  a.v = qkv + (s.H + s.KVH) * s.D;
  a.ldq = a.ldkv = ld;
  a.q_seq = a.kv_seq = s.T * ld;
  a.key_begin = key_begin;
  a.B = s.B;
  a.rows = s.T;
  a.past = 0;
  a.H = s.H;
  a.KVH = s.KVH;
  a.D = s.D;
  return attention_rows(a, stream);
}

template <typename T>
Status attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                          const cpu::AttentionShape& s, void* scratch, size_t scratch_bytes, const int32_t* key_begin,
                          cudaStream_t stream) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (dqkv == nullptr || dout == nullptr || qkv == nullptr || out == nullptr || lse == nullptr || scratch == nullptr)
    return Status::kInvalidArgument;
  if (scratch_bytes < attention_scratch_bytes(s) || reinterpret_cast<uintptr_t>(scratch) % alignof(float) != 0)
    return Status::kInvalidArgument;
  if (s.T > INT_MAX - 2 * kWRows) return Status::kInvalidArgument;
  if (s.D > kAttentionMaxHeadDim) return Status::kNotSupported;

  float* delta = static_cast<float*>(scratch);
  const int64_t nrows = s.B * s.T * s.H;
  constexpr int kDeltaThreads = 256;
  delta_kernel<T><<<grid_blocks(nrows, kDeltaThreads / 32), kDeltaThreads, 0, stream>>>(delta, dout, out, nrows,
                                                                                        int(s.T), int(s.H), int(s.D));
  if (const Status st = launched(); st != Status::kOk) return st;

  BwdArgs<T> a;
  a.dqkv = dqkv;
  a.dout = dout;
  a.qkv = qkv;
  a.lse = lse;
  a.delta = delta;
  a.key_begin = key_begin;
  a.ld = (s.H + 2 * s.KVH) * s.D;
  a.B = int(s.B);
  a.len = int(s.T);
  a.H = int(s.H);
  a.KVH = int(s.KVH);
  a.group = int(s.H / s.KVH);
  a.D = int(s.D);
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.D));
  a.scale_log2 = a.scale * kLog2e;
  const bool tensor_cores = wmma_head_dim(s.D) && aligned16(qkv) && aligned16(dout) && aligned16(dqkv);
  return run_backward(a, tensor_cores, stream);
}

template Status attention_rows<float>(const AttentionRows<float>&, cudaStream_t);
template Status attention_rows<bf16>(const AttentionRows<bf16>&, cudaStream_t);
template Status attention_rows<f16>(const AttentionRows<f16>&, cudaStream_t);
template Status attention_forward<float>(float*, float*, const float*, const cpu::AttentionShape&, void*, size_t,
                                         const int32_t*, cudaStream_t);
template Status attention_forward<bf16>(bf16*, float*, const bf16*, const cpu::AttentionShape&, void*, size_t,
                                        const int32_t*, cudaStream_t);
template Status attention_forward<f16>(f16*, float*, const f16*, const cpu::AttentionShape&, void*, size_t,
                                       const int32_t*, cudaStream_t);
template Status attention_backward<float>(float*, const float*, const float*, const float*, const float*,
                                          const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                         const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_backward<f16>(f16*, const f16*, const f16*, const f16*, const float*,
                                        const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);

}  // namespace castor::kernels::cuda
