// Internal to attention.cu: the tensor-core (WMMA 16x16x16, fp32 accumulators) flash-
// attention kernels for bf16 and f16: forward, dQ and dK/dV passes. Device code; include
// from attention.cu only.
#pragma once
#include <mma.h>

#include "kernels/cuda/attention_args.cuh"

namespace castor::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

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

}  // namespace
}  // namespace castor::kernels::cuda
