// Token (+ position) embedding, forward and backward (see embedding.cuh). Forward: a
// grid-stride kernel over 16-byte output packs (element path when unaligned). dwte,
// deterministic without sorting or atomics: a block owns 32 vocabulary rows x 256 columns
// in shared memory, scans all ids in tiles of 256, compacts those in its rows (ballots,
// in row order) and each thread adds their dout into its column, so each value is summed
// in row order; touched rows go to dwte once. dwpe: a thread per (t, c), b in order.
#include "kernels/cuda/embedding.cuh"

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBwdCols = 256;  // columns per backward block, one per thread
constexpr int kBwdRows = 32;   // vocabulary rows per backward block (shared accumulators)
constexpr int kBwdWarps = kBwdCols / 32;

// --- kernels -----------------------------------------------------------------------------

// Pack p covers out[n, c .. c + W) with C % W == 0.
template <int W, typename T>
__global__ void embedding_forward_kernel(T* __restrict__ out, const int32_t* __restrict__ ids,
                                         const T* __restrict__ wte, const T* __restrict__ wpe, int64_t N, int64_t seq,
                                         int64_t C, int64_t V, int64_t v_begin, int64_t v_count, int32_t* bad_ids) {
  const int64_t per_row = C / W, total = N * per_row;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = p / per_row, c = (p - n * per_row) * W;
    const int32_t raw = ids[n];
    float v[W];
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = 0.0f;
    if (raw < 0 || int64_t(raw) >= V) {
      if (bad_ids != nullptr) *bad_ids = 1;
    } else {
      const int64_t id = int64_t(raw) - v_begin;
      if (id >= 0 && id < v_count) load_floats<W>(wte + id * C + c, v);  // else another rank's vocabulary
      if (wpe != nullptr) {
        float pv[W];
        load_floats<W>(wpe + (n % seq) * C + c, pv);
#pragma unroll
        for (int j = 0; j < W; ++j) v[j] += pv[j];
      }
    }
    store_floats<W>(out + n * C + c, v);
  }
}

// Grid (ceil(C / 256), min(buckets, 65535)); block y walks buckets of 32 local vocabulary
// rows [r0, r1). See the file comment.
template <typename T>
__global__ void embedding_backward_wte_kernel(float* __restrict__ dwte, const T* __restrict__ dout,
                                              const int32_t* __restrict__ ids, int64_t N, int64_t C, int64_t V,
                                              int64_t v_begin, int64_t v_count, int64_t buckets, int32_t* bad_ids) {
  __shared__ float acc[kBwdRows][kBwdCols];
  __shared__ int hit_pos[kBwdCols];  // this tile's matching rows (offsets from base), in order
  __shared__ int hit_row[kBwdCols];  // and their vocabulary row within the bucket
  __shared__ int warp_hits[kBwdWarps];
  __shared__ int touched[kBwdRows];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t c = blockIdx.x * int64_t(kBwdCols) + tid;
  for (int64_t bucket = blockIdx.y; bucket < buckets; bucket += gridDim.y) {
    const int64_t r0 = bucket * kBwdRows, r1 = r0 + kBwdRows < v_count ? r0 + kBwdRows : v_count;
#pragma unroll
    for (int r = 0; r < kBwdRows; ++r) acc[r][tid] = 0.0f;
    if (tid < kBwdRows) touched[tid] = 0;
    __syncthreads();
    for (int64_t base = 0; base < N; base += kBwdCols) {
      // 1. Which of ids[base .. base + 256) fall in this bucket; flag bad ids (one block).
      const int64_t n = base + tid;
      int row = -1;
      if (n < N) {
        const int32_t raw = ids[n];
        const int64_t lv = int64_t(raw) - v_begin;
        if (raw < 0 || int64_t(raw) >= V) {
          if (bad_ids != nullptr && blockIdx.x == 0 && bucket == 0) *bad_ids = 1;
        } else if (lv >= r0 && lv < r1) {
          row = int(lv - r0);
        }
      }
      // 2. Compact the hits in thread (= row) order: warp ballot, then warp offsets.
      const unsigned mask = __ballot_sync(0xffffffffu, row >= 0);
      if (lane == 0) warp_hits[warp] = __popc(mask);
      __syncthreads();
      int offset = 0, total = 0;
      for (int k = 0; k < kBwdWarps; ++k) {
        offset += k < warp ? warp_hits[k] : 0;
        total += warp_hits[k];
      }
      if (row >= 0) {
        const int slot = offset + __popc(mask & ((1u << lane) - 1u));
        hit_pos[slot] = tid;
        hit_row[slot] = row;
        touched[row] = 1;
      }
      __syncthreads();
      // 3. Each thread adds the hits' dout into its column, in row order (4 loads in flight).
      if (c < C) {
        int k = 0;
        for (; k + 4 <= total; k += 4) {
          float g[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) g[u] = to_float(dout[(base + hit_pos[k + u]) * C + c]);
#pragma unroll
          for (int u = 0; u < 4; ++u) acc[hit_row[k + u]][tid] += g[u];
        }
        for (; k < total; ++k) acc[hit_row[k]][tid] += to_float(dout[(base + hit_pos[k]) * C + c]);
      }
      __syncthreads();  // the next tile rewrites warp_hits and the hit lists
    }
    if (c < C) {
      for (int r = 0; r < kBwdRows; ++r) {
        if (touched[r]) dwte[(r0 + r) * C + c] += acc[r][tid];
      }
    }
    __syncthreads();  // the next bucket resets touched
  }
}

// dwpe[t, c] += dout[b * seq + t, c] for b = 0..B-1 in order (the CPU kernel's order).
template <typename T>
__global__ void embedding_backward_wpe_kernel(float* __restrict__ dwpe, const T* __restrict__ dout, int64_t B,
                                              int64_t seq, int64_t C) {
  const int64_t total = seq * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / C, c = i - t * C;
    float acc = dwpe[i];
    for (int64_t b = 0; b < B; ++b) acc += to_float(dout[(b * seq + t) * C + c]);
    dwpe[i] = acc;
  }
}

// The CPU kernel's argument checks but for the ids (see embedding.cuh); resolves v_count.
Status check_args(const void* a, const void* b, const int32_t* ids, int64_t N, int64_t seq, int64_t C, int64_t V,
                  int64_t v_begin, int64_t& v_count) {
  if (N < 0 || seq <= 0 || C < 0 || V < 0 || N % seq != 0) return Status::kInvalidArgument;
  if (N != 0 && C != 0 && (a == nullptr || b == nullptr || ids == nullptr)) return Status::kInvalidArgument;
  if (v_count < 0) v_count = V;
  if (v_begin < 0 || v_begin + v_count > V) return Status::kInvalidArgument;
  return Status::kOk;
}

}  // namespace

template <typename T>
Status embedding_forward(T* out, const int32_t* ids, const T* wte, const T* wpe, int64_t N, int64_t seq, int64_t C,
                         int64_t V, int64_t v_begin, int64_t v_count, int32_t* bad_ids, cudaStream_t stream) {
  if (Status s = check_args(out, wte, ids, N, seq, C, V, v_begin, v_count); s != Status::kOk) return s;
  if (N == 0 || C == 0) return Status::kOk;
  constexpr int W = kVec<T>;
  const bool vec = aligned16(out) && aligned16(wte) && (!wpe || aligned16(wpe)) && C % W == 0;
  if (vec) {
    embedding_forward_kernel<W><<<grid_blocks(N * (C / W), kThreads), kThreads, 0, stream>>>(
        out, ids, wte, wpe, N, seq, C, V, v_begin, v_count, bad_ids);
  } else {
    embedding_forward_kernel<1><<<grid_blocks(N * C, kThreads), kThreads, 0, stream>>>(out, ids, wte, wpe, N, seq, C, V,
                                                                                       v_begin, v_count, bad_ids);
  }
  return launched();
}

template <typename T>
Status embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* ids, int64_t N, int64_t seq,
                          int64_t C, int64_t V, int64_t v_begin, int64_t v_count, int32_t* bad_ids,
                          cudaStream_t stream) {
  if (Status s = check_args(dwte, dout, ids, N, seq, C, V, v_begin, v_count); s != Status::kOk) return s;
  if (N == 0 || C == 0) return Status::kOk;
  const int64_t col_blocks = (C + kBwdCols - 1) / kBwdCols;
  if (col_blocks > int64_t(INT32_MAX)) return Status::kInvalidArgument;
  // At least one bucket, so an empty slice (v_count = 0) still scans the ids for bad ones.
  const int64_t buckets = std::max<int64_t>((v_count + kBwdRows - 1) / kBwdRows, 1);
  const dim3 grid(unsigned(col_blocks), unsigned(std::min<int64_t>(buckets, 65535)));
  embedding_backward_wte_kernel<<<grid, kBwdCols, 0, stream>>>(dwte, dout, ids, N, C, V, v_begin, v_count, buckets,
                                                               bad_ids);
  if (Status s = launched(); s != Status::kOk) return s;
  if (dwpe != nullptr) {
    embedding_backward_wpe_kernel<<<grid_blocks(seq * C, kThreads), kThreads, 0, stream>>>(dwpe, dout, N / seq, seq, C);
    return launched();
  }
  return Status::kOk;
}

#define CASTOR_INSTANTIATE(T)                                                                                         \
  template Status embedding_forward<T>(T*, const int32_t*, const T*, const T*, int64_t, int64_t, int64_t, int64_t,    \
                                       int64_t, int64_t, int32_t*, cudaStream_t);                                     \
  template Status embedding_backward<T>(float*, float*, const T*, const int32_t*, int64_t, int64_t, int64_t, int64_t, \
                                        int64_t, int64_t, int32_t*, cudaStream_t);
CASTOR_INSTANTIATE(float)
CASTOR_INSTANTIATE(bf16)
CASTOR_INSTANTIATE(f16)
#undef CASTOR_INSTANTIATE

}  // namespace castor::kernels::cuda
