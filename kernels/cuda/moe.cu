// MoE router, router losses, dispatch plan and permute / combine on CUDA (see moe.cuh; the
// reference is kernels/cpu/moe.cpp). Router rows run one warp per row; the loss sums go
// through per-block partials and a fixed tree; counts use integer atomics (exact). The plan
// is a chunked counting sort: the keep decision and slot of each assignment come from stable
// ranks (warp match + per-warp bucket counts) plus per-chunk prefix sums, so the integer
// outputs equal the CPU's serial loops. Row gathers use 16-byte packs where the rows allow.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kRowWarps = 8;  // rows in flight per block of the router / loss kernels
constexpr int kRowThreads = kRowWarps * 32;
constexpr int kLossBlocks = 512;      // most loss partials (a fixed tree sums them)
constexpr int64_t kPlanChunk = 2048;  // assignments per plan chunk
constexpr int kAssignWarps = 4;       // warps of the plan's ranking kernel
constexpr int kScanThreads = 1024;    // the plan's single scan block
constexpr int kHistThreads = 256;
constexpr int64_t kHistSharedBins = 12288;  // 48 KB of shared counters
constexpr int kGatherThreads = 256;

// ---------------------------------------------------------------- small device helpers

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Global warp index and warp count of a grid-stride loop over rows.
__device__ __forceinline__ int64_t global_warp() { return (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; }
__device__ __forceinline__ int64_t warp_count() { return (int64_t(gridDim.x) * blockDim.x) >> 5; }

// Lane 0 of each warp holds a double; thread 0 gets their sum in warp order (fixed).
__device__ double block_partial(double lane0_value, double* shared) {
  if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = lane0_value;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += shared[w];
  return s;
}

// One warp: exclusive prefix sums of get(i), i < n, in tiles of 32; put(i, prefix) for each i.
// Returns the total on every lane. get(i) and put(i, .) of one i run on the same lane.
template <class Get, class Put>
__device__ int64_t warp_scan_sequence(int64_t n, const Get& get, const Put& put) {
  const int lane = threadIdx.x & 31;
  int64_t carry = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 32) {
    const int64_t i = i0 + lane;
    const int64_t v = i < n ? get(i) : 0;
    int64_t incl = v;
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t t = __shfl_up_sync(kFull, incl, o);
      if (lane >= o) incl += t;
    }
    if (i < n) put(i, carry + incl - v);
    carry += __shfl_sync(kFull, incl, 31);
  }
  return carry;
}

// Sum of partials[0, P) by a fixed tree (blockDim.x = kLossBlocks threads); thread 0 writes
// *loss = total * mul / div and, if given, counts_out = counts_in (E entries).
__global__ void __launch_bounds__(kLossBlocks)
    finish_loss_kernel(const double* __restrict__ partials, int P, double mul, double div, double* __restrict__ loss,
                       const int64_t* __restrict__ counts_in, int64_t* __restrict__ counts_out, int64_t E) {
  __shared__ double sh[kLossBlocks];
  sh[threadIdx.x] = int(threadIdx.x) < P ? partials[threadIdx.x] : 0.0;
  __syncthreads();
  for (int h = kLossBlocks / 2; h > 0; h >>= 1) {
    if (int(threadIdx.x) < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = sh[0] * mul / div;
  if (counts_in && counts_out)
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts_out[e] = counts_in[e];
}

// ---------------------------------------------------------------- router

// Candidate (v, e) beats (bv, be): larger prob, ties to the lower index; be < 0 is "none".
// With NaNs the comparison fails and the incumbent stays, so a valid index always wins.
__device__ __forceinline__ bool beats(float v, int e, float bv, int be) {
  return e >= 0 && (be < 0 || v > bv || (v == bv && e < be));
}

// One warp per row: softmax, then k rounds of "best unchosen expert" (descending, ties to the
// lower index, as the CPU's insertion). Lane l owns experts l + 32 i; bit i of `chosen` marks them.
__global__ void router_topk_kernel(const float* __restrict__ logits, int64_t N, int E, int k, bool renormalize,
                                   float* __restrict__ probs, int32_t* __restrict__ expert, float* __restrict__ gate) {
  const int lane = threadIdx.x & 31;
  for (int64_t n = global_warp(); n < N; n += warp_count()) {
    const float* x = logits + n * E;
    float* p = probs + n * E;
    float m = -INFINITY;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, x[e]);
    m = warp_max(m);
    float s = 0.0f;
    for (int e = lane; e < E; e += 32) s += expf(x[e] - m);
    const float inv = 1.0f / warp_sum(s);
    for (int e = lane; e < E; e += 32) p[e] = expf(x[e] - m) * inv;  // each lane rereads only its own writes
    uint64_t chosen = 0;
    float gsum = 0.0f;
    for (int j = 0; j < k; ++j) {
      float bv = 0.0f;
      int be = -1;
      for (int e = lane, i = 0; e < E; e += 32, ++i) {
        if (!((chosen >> i) & 1u) && beats(p[e], e, bv, be)) {
          bv = p[e];
          be = e;
        }
      }
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(kFull, bv, o);
        const int oe = __shfl_xor_sync(kFull, be, o);
        if (beats(ov, oe, bv, be)) {
          bv = ov;
          be = oe;
        }
      }
      bv = __shfl_sync(kFull, bv, 0);  // one answer on every lane, even if NaNs broke the order
      be = __shfl_sync(kFull, be, 0);
      if (lane == (be & 31)) chosen |= uint64_t{1} << (be >> 5);
      if (lane == 0) {
        expert[n * k + j] = be;
        gate[n * k + j] = bv;
        gsum += bv;  // in j order, as the CPU
      }
    }
    if (lane == 0 && renormalize)
      for (int j = 0; j < k; ++j) gate[n * k + j] /= gsum;
  }
}

// One warp per row; dlogits holds dprobs until the softmax backward (each lane its own experts).
__global__ void router_topk_backward_kernel(const float* __restrict__ probs, const int32_t* __restrict__ expert,
                                            const float* __restrict__ gate, const float* __restrict__ dgate,
                                            const float* __restrict__ dprobs_extra, int64_t N, int E, int k,
                                            bool renormalize, float* __restrict__ dlogits) {
  const int lane = threadIdx.x & 31;
  for (int64_t n = global_warp(); n < N; n += warp_count()) {
    const float* p = probs + n * E;
    const int32_t* ex = expert + n * k;
    const float* g = gate + n * k;
    const float* dg = dgate + n * k;
    float* d = dlogits + n * E;
    float S = 0.0f, dot_gg = 0.0f;
    for (int j = 0; j < k; ++j) {
      if (ex[j] >= 0 && ex[j] < E) S += p[ex[j]];
      dot_gg += dg[j] * g[j];
    }
    double pd = 0.0;
    for (int e = lane; e < E; e += 32) {
      float v = dprobs_extra ? dprobs_extra[n * E + e] : 0.0f;
      for (int j = 0; j < k; ++j)
        if (ex[j] == e) v += renormalize ? (dg[j] - dot_gg) / S : dg[j];
      d[e] = v;
      pd += double(p[e]) * double(v);
    }
    const float c = float(warp_sum(pd));
    for (int e = lane; e < E; e += 32) d[e] = p[e] * (d[e] - c);
  }
}

// ---------------------------------------------------------------- counts and losses

// counts[bin] += assignments per bin: bin = expert (per_choice false) or (a % k) * E + expert.
// Shared per-block counters when they fit, then one global atomic per bin and block.
__global__ void histogram_kernel(const int32_t* __restrict__ expert, int64_t A, int E, int k, bool per_choice,
                                 bool use_shared, unsigned long long* __restrict__ counts) {
  extern __shared__ unsigned int hist[];
  const int64_t bins = per_choice ? int64_t(k) * E : E;
  if (use_shared) {
    for (int64_t b = threadIdx.x; b < bins; b += blockDim.x) hist[b] = 0;
    __syncthreads();
  }
  for (int64_t a = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; a < A; a += int64_t(gridDim.x) * blockDim.x) {
    const int e = expert[a];
    if (e < 0 || e >= E) continue;  // the CPU's kOutOfRange: counted nowhere
    const int64_t b = per_choice ? (a % k) * E + e : e;
    if (use_shared)
      atomicAdd(&hist[b], 1u);
    else
      atomicAdd(&counts[b], 1ull);
  }
  if (use_shared) {
    __syncthreads();
    for (int64_t b = threadIdx.x; b < bins; b += blockDim.x)
      if (hist[b]) atomicAdd(&counts[b], (unsigned long long)hist[b]);
  }
}

// Zeroes counts, then adds the histogram. counts is int64 (E or k * E entries).
Status count_bins(const int32_t* expert, int64_t A, int64_t E, int64_t k, bool per_choice, int64_t* counts,
                  cudaStream_t stream) {
  const int64_t bins = per_choice ? k * E : E;
  if (cudaMemsetAsync(counts, 0, size_t(bins) * sizeof(int64_t), stream) != cudaSuccess) return Status::kDeviceError;
  if (A == 0) return launched();
  const bool use_shared = bins <= kHistSharedBins;
  const size_t smem = use_shared ? size_t(bins) * sizeof(unsigned int) : 0;
  histogram_kernel<<<grid_blocks(A, kHistThreads * 16, 1024), kHistThreads, smem, stream>>>(
      expert, A, int(E), int(k), per_choice, use_shared, reinterpret_cast<unsigned long long*>(counts));
  return launched();
}

// Blocks of the loss kernels: a function of N only, so the partials' split is fixed.
int loss_blocks(int64_t N) { return int(std::min<int64_t>((N + kRowWarps - 1) / kRowWarps, kLossBlocks)); }

// Per row: sum_e use[e] * probs[n, e] (double); dprobs[n, e] += gscale * float(use[e]).
__global__ void balance_loss_kernel(const float* __restrict__ probs, int64_t N, int E, const int64_t* __restrict__ use,
                                    float gscale, float* __restrict__ dprobs, double* __restrict__ partials) {
  __shared__ double sh[kRowWarps];
  const int lane = threadIdx.x & 31;
  double acc = 0.0;
  for (int64_t n = global_warp(); n < N; n += warp_count()) {
    const float* p = probs + n * E;
    double s = 0.0;
    for (int e = lane; e < E; e += 32) {
      s += double(use[e]) * double(p[e]);
      if (dprobs) dprobs[n * E + e] += gscale * float(use[e]);
    }
    acc += warp_sum(s);
  }
  const double block = block_partial(acc, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

// Per row: lse^2 with lse = m + log(sum exp(x - m)) in double; dlogits += c * exp(x - m).
__global__ void z_loss_kernel(const float* __restrict__ logits, int64_t N, int E, double gscale,
                              float* __restrict__ dlogits, double* __restrict__ partials) {
  __shared__ double sh[kRowWarps];
  const int lane = threadIdx.x & 31;
  double acc = 0.0;
  for (int64_t n = global_warp(); n < N; n += warp_count()) {
    const float* x = logits + n * E;
    float mf = -INFINITY;
    for (int e = lane; e < E; e += 32) mf = fmaxf(mf, x[e]);
    const double m = double(warp_max(mf));
    double s = 0.0;
    for (int e = lane; e < E; e += 32) s += exp(double(x[e]) - m);
    s = warp_sum(s);
    const double lse = m + log(s);
    if (dlogits) {
      const double c = gscale * lse / s;
      for (int e = lane; e < E; e += 32) dlogits[n * E + e] += float(c * exp(double(x[e]) - m));
    }
    acc += lse * lse;
  }
  const double block = block_partial(acc, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

// ---------------------------------------------------------------- plan

// Scratch of moe_plan, int32 arrays (every value is at most N * k <= INT32_MAX):
//   base  (chunks x kE): per chunk and bucket q = j * E + e, its assignments; scanned in place
//                        into those of the earlier chunks;
//   tot   (kE): the bucket's assignments; limit (kE): how many of them (the first, in token
//                        order) are kept;
//   kbase (chunks x E): the first slot of chunk c's kept assignments of expert e.
struct PlanScratch {
  int32_t* base;
  int32_t* tot;
  int32_t* limit;
  int32_t* kbase;
};

int64_t plan_chunks(int64_t A) { return (A + kPlanChunk - 1) / kPlanChunk; }

size_t plan_scratch_ints(int64_t A, int64_t E, int64_t k) {
  const int64_t chunks = plan_chunks(A);
  return size_t(chunks * k * E + 2 * k * E + chunks * E);
}

PlanScratch carve_plan_scratch(void* scratch, int64_t A, int64_t E, int64_t k) {
  const int64_t chunks = plan_chunks(A), kE = k * E;
  int32_t* p = static_cast<int32_t*>(scratch);
  return PlanScratch{p, p + chunks * kE, p + chunks * kE + kE, p + chunks * kE + 2 * kE};
}

// One block per chunk: base[c][q] = # assignments of chunk c in bucket q.
__global__ void plan_count_kernel(const int32_t* __restrict__ expert, int64_t A, int E, int k,
                                  int32_t* __restrict__ base) {
  extern __shared__ int hist_q[];
  const int64_t kE = int64_t(k) * E, c = blockIdx.x;
  for (int64_t q = threadIdx.x; q < kE; q += blockDim.x) hist_q[q] = 0;
  __syncthreads();
  const int64_t a1 = min64(A, (c + 1) * kPlanChunk);
  for (int64_t a = c * kPlanChunk + threadIdx.x; a < a1; a += blockDim.x) {
    const int e = expert[a];
    if (e >= 0 && e < E) atomicAdd(&hist_q[(a % k) * E + e], 1);
  }
  __syncthreads();
  for (int64_t q = threadIdx.x; q < kE; q += blockDim.x) base[c * kE + q] = hist_q[q];
}

// kept_chunk(c, q): bucket q's assignments in chunk c that are kept (their bucket rank < limit).
__device__ __forceinline__ int64_t kept_in_chunk(const PlanScratch& s, int64_t chunks, int64_t kE, int64_t c,
                                                 int64_t q) {
  const int64_t b = s.base[c * kE + q];
  const int64_t next = c + 1 < chunks ? s.base[(c + 1) * kE + q] : s.tot[q];
  return max64(0, min64(s.limit[q] - b, next - b));
}

// One block of kScanThreads. (A) per bucket, exclusive scan of base over chunks and the totals;
// (B) per expert, the CPU's pass 1 in closed form: of bucket (j, e)'s tot assignments, the first
// limit = clamp(capacity - filled, 0, tot) are kept, filled being what e holds before choice j;
// (C) offsets = exclusive scan of the kept totals, *dropped; (D) per expert, the slot base of
// each chunk = offsets[e] + kept assignments of e in earlier chunks.
__global__ void __launch_bounds__(kScanThreads)
    plan_scan_kernel(int64_t A, int E, int k, int64_t capacity, const int64_t* __restrict__ before, int64_t chunks,
                     PlanScratch s, int64_t* __restrict__ offsets, int64_t* __restrict__ dropped) {
  __shared__ int32_t start[kPlanMaxBuckets];  // kept total, then first slot, of each expert
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t kE = int64_t(k) * E;
  for (int64_t q = warp; q < kE; q += warps) {
    const int64_t total = warp_scan_sequence(
        chunks, [&](int64_t c) { return int64_t(s.base[c * kE + q]); },
        [&](int64_t c, int64_t x) { s.base[c * kE + q] = int32_t(x); });
    if (lane == 0) s.tot[q] = int32_t(total);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int64_t filled = 0, kept = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t q = int64_t(j) * E + e, tot = s.tot[q];
      if (before) filled = min64(max64(capacity, 0), before[q]);
      const int64_t limit = capacity < 0 ? tot : max64(0, min64(capacity - filled, tot));
      s.limit[q] = int32_t(limit);
      filled += limit;
      kept += limit;
    }
    start[e] = int32_t(kept);
  }
  __syncthreads();
  if (warp == 0) {
    const int64_t total = warp_scan_sequence(
        E, [&](int64_t e) { return int64_t(start[e]); },
        [&](int64_t e, int64_t x) {
          start[e] = int32_t(x);
          offsets[e] = x;
        });
    if (lane == 0) {
      offsets[E] = total;
      *dropped = A - total;
    }
  }
  __syncthreads();
  for (int e = warp; e < E; e += warps) {
    warp_scan_sequence(
        chunks,
        [&](int64_t c) {
          int64_t kept = 0;
          for (int j = 0; j < k; ++j) kept += kept_in_chunk(s, chunks, kE, c, int64_t(j) * E + e);
          return kept;
        },
        [&](int64_t c, int64_t x) { s.kbase[c * E + e] = int32_t(start[e] + x); });
  }
}

// Stable rank of this thread's item among the block's items of bucket b (b < 0: no item) in
// thread order, plus run[b] (the bucket's items in earlier rounds), which it then advances.
// wc (warps x B) holds per-warp bucket counts and is all zero between calls. Every thread of
// the block must call it (barriers).
__device__ int stable_rank(int b, int B, int* wc, int* run) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned peers = __match_any_sync(kFull, b);
  const unsigned lower = peers & ((1u << lane) - 1u);
  const bool leader = lower == 0;
  if (b >= 0 && leader) wc[warp * B + b] = __popc(peers);
  __syncthreads();
  int r = 0;
  if (b >= 0) {
    r = run[b] + __popc(lower);
    for (int w = 0; w < warp; ++w) r += wc[w * B + b];
  }
  __syncthreads();
  if (b >= 0 && leader) {
    atomicAdd(&run[b], __popc(peers));  // integer: order-independent
    wc[warp * B + b] = 0;
  }
  __syncthreads();
  return r;
}

size_t plan_assign_smem(int64_t E, int64_t k) { return size_t((kAssignWarps + 1) * (k * E + E)) * sizeof(int); }

// One block per chunk, rounds of blockDim assignments in order. An assignment is kept when its
// rank in bucket (j, e) over the whole batch order (earlier chunks + rank in chunk) is below the
// bucket's limit; its slot is the chunk's base for e plus its rank among the chunk's kept
// assignments of e in assignment order (token order, then j), as the CPU's pass 2.
__global__ void plan_assign_kernel(const int32_t* __restrict__ expert, int64_t A, int E, int k, PlanScratch s,
                                   int32_t* __restrict__ slot, int32_t* __restrict__ token_of_slot) {
  extern __shared__ int sh_plan[];
  const int kE = k * E, warps = blockDim.x >> 5;
  int* wc_q = sh_plan;             // warps x kE
  int* run_q = wc_q + warps * kE;  // kE
  int* wc_e = run_q + kE;          // warps x E
  int* run_e = wc_e + warps * E;   // E
  for (int i = threadIdx.x; i < (warps + 1) * (kE + E); i += blockDim.x) sh_plan[i] = 0;
  __syncthreads();
  const int64_t c = blockIdx.x, a0 = c * kPlanChunk, a1 = min64(A, a0 + kPlanChunk);
  for (int64_t r0 = a0; r0 < a1; r0 += blockDim.x) {  // uniform trip count: barriers inside
    const int64_t a = r0 + threadIdx.x;
    const bool valid = a < a1;
    int e = valid ? expert[a] : -1;
    if (e >= E) e = -1;  // the CPU's kOutOfRange: planned as dropped
    const int q = e >= 0 ? int(a % k) * E + e : -1;
    const int rank_q = stable_rank(q, kE, wc_q, run_q);
    const bool keep = q >= 0 && int64_t(s.base[c * kE + q]) + rank_q < s.limit[q];
    const int rank_e = stable_rank(keep ? e : -1, E, wc_e, run_e);
    if (valid) {
      const int32_t sl = keep ? s.kbase[c * E + e] + rank_e : -1;
      slot[a] = sl;
      if (keep) token_of_slot[sl] = int32_t(a / k);
    }
  }
}

// ---------------------------------------------------------------- row gathers

// V consecutive elements of T, loaded and stored as one aligned access (16 bytes when V > 1).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_pack(const T* p, float (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_float(pk.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const float (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int i = 0; i < V; ++i) pk.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

// x_perm[s] = x[token_of_slot[s]] (a zero row for a negative token), packs of V.
template <typename T, int V>
__global__ void permute_kernel(T* __restrict__ x_perm, const T* __restrict__ x,
                               const int32_t* __restrict__ token_of_slot, int64_t M, int64_t C) {
  const int64_t packs = C / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i / packs, c = (i % packs) * V;
    const int32_t t = token_of_slot[s];
    Pack<T, V> pk;
    if (t >= 0) {
      pk = *reinterpret_cast<const Pack<T, V>*>(x + int64_t(t) * C + c);
    } else {
#pragma unroll
      for (int v = 0; v < V; ++v) pk.v[v] = from_float<T>(0.0f);
    }
    *reinterpret_cast<Pack<T, V>*>(x_perm + s * C + c) = pk;
  }
}

// out[n] (=) sum over kept j, in j order, of w_j * src[slot[n*k+j]] (w = gate, or 1 without).
template <typename T, int V>
__global__ void gather_sum_kernel(T* __restrict__ out, const T* __restrict__ src, const float* __restrict__ gate,
                                  const int32_t* __restrict__ slot, int64_t N, int k, int64_t C) {
  const int64_t packs = C / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * packs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / packs, c = (i % packs) * V;
    float acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = 0.0f;
    for (int j = 0; j < k; ++j) {
      const int32_t s = slot[n * k + j];
      if (s < 0) continue;
      const float w = gate ? gate[n * k + j] : 1.0f;
      float r[V];
      load_pack<T, V>(src + int64_t(s) * C + c, r);
#pragma unroll
      for (int v = 0; v < V; ++v) acc[v] += w * r[v];
    }
    store_pack<T, V>(out + n * C + c, acc);
  }
}

// One warp per token: for each kept j, dy_perm[slot] = gate * dy[n] and dgate = dot(dy[n], y_perm[slot]).
template <typename T, int V>
__global__ void combine_backward_kernel(T* __restrict__ dy_perm, float* __restrict__ dgate, const T* __restrict__ dy,
                                        const T* __restrict__ y_perm, const float* __restrict__ gate,
                                        const int32_t* __restrict__ slot, int64_t N, int k, int64_t C) {
  const int lane = threadIdx.x & 31;
  for (int64_t n = global_warp(); n < N; n += warp_count()) {
    const T* d = dy + n * C;
    for (int j = 0; j < k; ++j) {
      const int64_t a = n * k + j;
      const int32_t s = slot[a];
      if (s < 0) {
        if (lane == 0) dgate[a] = 0.0f;
        continue;
      }
      const float g = gate[a];
      float dot = 0.0f;
      for (int64_t c = int64_t(lane) * V; c < C; c += 32 * V) {
        float dv[V], yv[V], out[V];
        load_pack<T, V>(d + c, dv);
        load_pack<T, V>(y_perm + int64_t(s) * C + c, yv);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          out[v] = g * dv[v];
          dot += dv[v] * yv[v];
        }
        store_pack<T, V>(dy_perm + int64_t(s) * C + c, out);
      }
      dot = warp_sum(dot);
      if (lane == 0) dgate[a] = dot;
    }
  }
}

// Elements per 16-byte pack when every row of every pointer starts 16-byte aligned, else 1.
template <typename T>
int pack_width(int64_t C, std::initializer_list<const void*> ptrs) {
  constexpr int kWide = 16 / sizeof(T);
  if (C % kWide != 0) return 1;
  for (const void* p : ptrs)
    if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return kWide;
}

template <typename T>
Status gather_sum(T* out, const T* src, const float* gate, const int32_t* slot, int64_t N, int64_t k, int64_t C,
                  cudaStream_t stream) {
  if (N < 0 || k <= 0 || C <= 0 || k > INT_MAX) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!out || !src || !slot) return Status::kInvalidArgument;
  constexpr int kWide = 16 / sizeof(T);
  if (pack_width<T>(C, {out, src}) == kWide) {
    gather_sum_kernel<T, kWide><<<grid_blocks(N * (C / kWide), kGatherThreads), kGatherThreads, 0, stream>>>(
        out, src, gate, slot, N, int(k), C);
  } else {
    gather_sum_kernel<T, 1>
        <<<grid_blocks(N * C, kGatherThreads), kGatherThreads, 0, stream>>>(out, src, gate, slot, N, int(k), C);
  }
  return launched();
}

}  // namespace

// ---------------------------------------------------------------- host wrappers

Status router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                   int32_t* expert, float* gate, cudaStream_t stream) {
  if (N < 0 || E <= 0 || k <= 0 || k > E || E > INT32_MAX) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!logits || !probs || !expert || !gate) return Status::kInvalidArgument;
  if (E > kRouterMaxExperts) return Status::kNotSupported;  // 64 chosen bits per lane
  router_topk_kernel<<<grid_blocks(N, kRowWarps), kRowThreads, 0, stream>>>(logits, N, int(E), int(k), renormalize,
                                                                            probs, expert, gate);
  return launched();
}

Status router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                            const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                            float* dlogits, cudaStream_t stream) {
  if (N < 0 || E <= 0 || k <= 0 || k > E || E > INT32_MAX) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!probs || !expert || !gate || !dgate || !dlogits) return Status::kInvalidArgument;
  router_topk_backward_kernel<<<grid_blocks(N, kRowWarps), kRowThreads, 0, stream>>>(
      probs, expert, gate, dgate, dprobs_extra, N, int(E), int(k), renormalize, dlogits);
  return launched();
}

size_t moe_loss_scratch_bytes(int64_t E) { return kLossBlocks * sizeof(double) + size_t(std::max<int64_t>(E, 0)) * 8; }

Status moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k, double* loss,
                        float scale, float* dprobs, int64_t* counts, int64_t N_total, const int64_t* group_counts,
                        void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (N <= 0 || E <= 0 || k <= 0 || k > E || N_total < 0 || E > INT32_MAX) return Status::kInvalidArgument;
  if (!probs || !expert || !loss) return Status::kInvalidArgument;
  if (!scratch || scratch_bytes < moe_loss_scratch_bytes(E) || reinterpret_cast<uintptr_t>(scratch) % 8 != 0)
    return Status::kInvalidArgument;
  double* partials = static_cast<double*>(scratch);
  const int64_t Nt = N_total > 0 ? N_total : N;
  const double norm = double(E) / (double(Nt) * double(Nt) * double(k));
  const float gscale = float(double(scale) * double(E) / (double(Nt) * double(Nt) * double(k)));
  const int64_t* use = group_counts;
  if (!use) {  // count this part's assignments, into counts or the scratch
    int64_t* cnt = counts ? counts : reinterpret_cast<int64_t*>(partials + kLossBlocks);
    if (Status s = count_bins(expert, N * k, E, k, false, cnt, stream); s != Status::kOk) return s;
    use = cnt;
  }
  const int blocks = loss_blocks(N);
  balance_loss_kernel<<<blocks, kRowThreads, 0, stream>>>(probs, N, int(E), use, gscale, dprobs, partials);
  if (Status s = launched(); s != Status::kOk) return s;
  finish_loss_kernel<<<1, kLossBlocks, 0, stream>>>(partials, blocks, norm, 1.0, loss, group_counts,
                                                    group_counts ? counts : nullptr, E);
  return launched();
}

Status moe_count_assignments(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t* counts,
                             cudaStream_t stream) {
  if (N < 0 || E <= 0 || k <= 0 || k > E || !counts || (N > 0 && !expert)) return Status::kInvalidArgument;
  if (E > INT32_MAX || N > INT64_MAX / k) return Status::kInvalidArgument;
  return count_bins(expert, N * k, E, k, true, counts, stream);
}

Status router_z_loss(const float* logits, int64_t N, int64_t E, double* loss, float scale, float* dlogits,
                     int64_t N_total, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (N <= 0 || E <= 0 || N_total < 0 || E > INT32_MAX) return Status::kInvalidArgument;
  if (!logits || !loss) return Status::kInvalidArgument;
  if (!scratch || scratch_bytes < moe_loss_scratch_bytes(E) || reinterpret_cast<uintptr_t>(scratch) % 8 != 0)
    return Status::kInvalidArgument;
  double* partials = static_cast<double*>(scratch);
  const int64_t Nt = N_total > 0 ? N_total : N;
  const double gscale = 2.0 * double(scale) / double(Nt);
  const int blocks = loss_blocks(N);
  z_loss_kernel<<<blocks, kRowThreads, 0, stream>>>(logits, N, int(E), gscale, dlogits, partials);
  if (Status s = launched(); s != Status::kOk) return s;
  finish_loss_kernel<<<1, kLossBlocks, 0, stream>>>(partials, blocks, 1.0, double(Nt), loss, nullptr, nullptr, 0);
  return launched();
}

size_t moe_plan_scratch_bytes(int64_t N, int64_t E, int64_t k) {
  if (N < 0 || E <= 0 || k <= 0 || k * E > kPlanMaxBuckets || N > INT32_MAX / k) return 0;
  return plan_scratch_ints(N * k, E, k) * sizeof(int32_t);
}

Status moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                int32_t* slot, int32_t* token_of_slot, int64_t* dropped, const int64_t* before, void* scratch,
                size_t scratch_bytes, cudaStream_t stream) {
  if (N < 0 || E <= 0 || k <= 0 || k > E) return Status::kInvalidArgument;
  if (N > INT32_MAX / k) return Status::kInvalidArgument;  // slots are int32
  if (!offsets || !dropped) return Status::kInvalidArgument;
  if (N > 0 && (!expert || !slot || !token_of_slot)) return Status::kInvalidArgument;
  if (k * E > kPlanMaxBuckets) return Status::kNotSupported;  // shared-memory bucket tables
  if (!scratch || scratch_bytes < moe_plan_scratch_bytes(N, E, k) || reinterpret_cast<uintptr_t>(scratch) % 4 != 0)
    return Status::kInvalidArgument;
  const int64_t A = N * k, chunks = plan_chunks(A);
  const PlanScratch s = carve_plan_scratch(scratch, A, E, k);
  if (chunks > 0) {
    plan_count_kernel<<<unsigned(chunks), kHistThreads, size_t(k * E) * sizeof(int), stream>>>(expert, A, int(E),
                                                                                               int(k), s.base);
    if (Status st = launched(); st != Status::kOk) return st;
  }
  plan_scan_kernel<<<1, kScanThreads, 0, stream>>>(A, int(E), int(k), capacity, before, chunks, s, offsets, dropped);
  if (Status st = launched(); st != Status::kOk) return st;
  if (chunks == 0) return Status::kOk;
  const size_t smem = plan_assign_smem(E, k);
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(plan_assign_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess)
    return Status::kDeviceError;
  plan_assign_kernel<<<unsigned(chunks), kAssignWarps * 32, smem, stream>>>(expert, A, int(E), int(k), s, slot,
                                                                            token_of_slot);
  return launched();
}

template <typename T>
Status moe_permute(T* x_perm, const T* x, const int32_t* token_of_slot, int64_t M, int64_t C, cudaStream_t stream) {
  if (M < 0 || C <= 0) return Status::kInvalidArgument;
  if (M == 0) return Status::kOk;
  if (!x_perm || !x || !token_of_slot) return Status::kInvalidArgument;
  constexpr int kWide = 16 / sizeof(T);
  if (pack_width<T>(C, {x_perm, x}) == kWide) {
    permute_kernel<T, kWide>
        <<<grid_blocks(M * (C / kWide), kGatherThreads), kGatherThreads, 0, stream>>>(x_perm, x, token_of_slot, M, C);
  } else {
    permute_kernel<T, 1>
        <<<grid_blocks(M * C, kGatherThreads), kGatherThreads, 0, stream>>>(x_perm, x, token_of_slot, M, C);
  }
  return launched();
}

template <typename T>
Status moe_permute_backward(T* dx, const T* dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C,
                            cudaStream_t stream) {
  return gather_sum<T>(dx, dx_perm, nullptr, slot, N, k, C, stream);
}

template <typename T>
Status moe_combine(T* y, const T* y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k, int64_t C,
                   cudaStream_t stream) {
  if (N > 0 && !gate) return Status::kInvalidArgument;
  return gather_sum<T>(y, y_perm, gate, slot, N, k, C, stream);
}

template <typename T>
Status moe_combine_backward(T* dy_perm, float* dgate, const T* dy, const T* y_perm, const float* gate,
                            const int32_t* slot, int64_t N, int64_t k, int64_t C, cudaStream_t stream) {
  if (N < 0 || k <= 0 || C <= 0 || k > INT_MAX) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dy_perm || !dgate || !dy || !y_perm || !gate || !slot) return Status::kInvalidArgument;
  constexpr int kWide = 16 / sizeof(T);
  if (pack_width<T>(C, {dy_perm, dy, y_perm}) == kWide) {
    combine_backward_kernel<T, kWide>
        <<<grid_blocks(N, kRowWarps), kRowThreads, 0, stream>>>(dy_perm, dgate, dy, y_perm, gate, slot, N, int(k), C);
  } else {
    combine_backward_kernel<T, 1>
        <<<grid_blocks(N, kRowWarps), kRowThreads, 0, stream>>>(dy_perm, dgate, dy, y_perm, gate, slot, N, int(k), C);
  }
  return launched();
}

#define CASTOR_MOE_INSTANTIATE(T)                                                                                      \
  template Status moe_permute<T>(T*, const T*, const int32_t*, int64_t, int64_t, cudaStream_t);                        \
  template Status moe_permute_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);      \
  template Status moe_combine<T>(T*, const T*, const float*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t); \
  template Status moe_combine_backward<T>(T*, float*, const T*, const T*, const float*, const int32_t*, int64_t,       \
                                          int64_t, int64_t, cudaStream_t);
CASTOR_MOE_INSTANTIATE(float)
CASTOR_MOE_INSTANTIATE(bf16)
CASTOR_MOE_INSTANTIATE(f16)
#undef CASTOR_MOE_INSTANTIATE

}  // namespace castor::kernels::cuda
