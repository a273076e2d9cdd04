// Internal to attention.cu: the scalar (fp32 FMA) flash-attention kernels, for float and
// for head dims without a tensor-core kernel: forward, dQ and dK/dV passes. Device code;
// include from attention.cu only.
#pragma once
#include "kernels/cuda/attention_args.cuh"

namespace castor::kernels::cuda {
namespace {

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

}  // namespace
}  // namespace castor::kernels::cuda
