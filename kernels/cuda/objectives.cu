// Auxiliary objectives (see objectives.cuh). segment_mean: one thread per (range, column);
// its backward: one thread per (row, column), the block finds the ranges holding its row by
// warp ballots and adds them in index order. InfoNCE (P, D small): row norms, a tiled fp32
// GEMM for S, one block per row / column of S for the softmax, then two GEMMs for the
// gradient. mse_rows / kl_distill: one block per row. Per-row double losses land in scratch;
// a single block sums them (fixed tree): no atomics anywhere, results are deterministic.
#include <climits>
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/objectives.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kThreads = 256;      // block size of the row and column kernels
constexpr int kSumThreads = 1024;  // single-block final sums
constexpr int kTile = 16;          // GEMM tile (kTile x kTile threads)
constexpr int kGemmThreads = kTile * kTile;
constexpr int64_t kMaxGrid = 65535;
constexpr int64_t kMaxInfoNceDim = kMaxGrid * kTile;  // P and D: GEMM grid limit
constexpr double kNormEps = 1e-12;

bool valid_temperature(float t) { return t > 0.0f && std::isfinite(t); }
bool aligned8(const void* p) { return reinterpret_cast<uintptr_t>(p) % 8 == 0; }

// ---- block reductions over double / int64 (common.cuh has float only) ----

// (v, i) replaced by (v2, i2) when that is larger, ties to the lower index; i < 0 = empty.
__device__ __forceinline__ void take_better(float& v, int64_t& i, float v2, int64_t i2) {
  if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) {
    v = v2;
    i = i2;
  }
}

// Argmax over the block (ties to the lower index); every thread gets the winner's index.
__device__ int64_t block_argmax(float v, int64_t i, float* sv, int64_t* si) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    take_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  }
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = i;
  }
  __syncthreads();
  v = lane < warps ? sv[lane] : 0.0f;
  i = lane < warps ? si[lane] : -1;
  for (int o = 16; o > 0; o >>= 1) {
    take_better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
  }
  __syncthreads();
  return i;
}

__device__ __forceinline__ bool valid_range(int32_t b, int32_t e, int64_t rows) { return b >= 0 && e > b && e <= rows; }

// ---- segment mean ----

// grid.x: column tiles, grid.y: ranges (grid-stride). Double sums, as the CPU.
template <typename T>
__global__ void segment_mean_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t rows, int64_t C,
                                    const int32_t* __restrict__ begin, const int32_t* __restrict__ end, int64_t n) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int32_t b = begin[i], e = end[i];
    if (!valid_range(b, e, rows)) {
      out[i * C + c] = from_float<T>(NAN);
      continue;
    }
    double acc = 0.0;
    for (int64_t r = b; r < e; ++r) acc += double(to_float(x[r * C + c]));
    out[i * C + c] = from_float<T>(float(acc * (1.0 / double(e - b))));
  }
}

// grid.x: column tiles of kThreads, grid.y: rows (grid-stride). For its row the block scans
// the ranges kThreads at a time; a ballot per warp marks those holding the row, and every
// thread adds the marked ranges' gradients to its column in index order. dx is read and
// written only for rows some range holds.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    segment_mean_backward_kernel(T* __restrict__ dx, const T* __restrict__ dout, int64_t rows, int64_t C,
                                 const int32_t* __restrict__ begin, const int32_t* __restrict__ end, int64_t n) {
  __shared__ unsigned hit_mask[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t c = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float acc = 0.0f;
    bool touched = false;
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t i = base + threadIdx.x;
      bool hit = false;
      if (i < n) {
        const int32_t b = begin[i], e = end[i];
        hit = valid_range(b, e, rows) && b <= r && r < e;
      }
      const unsigned m = __ballot_sync(0xffffffffu, hit);
      if (lane == 0) hit_mask[warp] = m;
      __syncthreads();
      if (c < C) {
        for (int w = 0; w < kThreads / 32; ++w) {
          for (unsigned bits = hit_mask[w]; bits != 0; bits &= bits - 1) {
            const int64_t j = base + w * 32 + (__ffs(int(bits)) - 1);
            if (!touched) {
              acc = to_float(dx[r * C + c]);
              touched = true;
            }
            const double inv = 1.0 / double(end[j] - begin[j]);
            acc += float(double(to_float(dout[j * C + c])) * inv);
          }
        }
      }
      __syncthreads();  // hit_mask is rewritten by the next chunk
    }
    if (touched) dx[r * C + c] = from_float<T>(acc);
  }
}

// The CPU kernel's checks: sizes and pointers, then the ranges from their host copies.
Status check_segment_args(const void* p, const void* q, int64_t rows, int64_t C, const int32_t* begin,
                          const int32_t* end, int64_t n, const int32_t* begin_host, const int32_t* end_host) {
  if (rows < 0 || C <= 0 || n < 0) return Status::kInvalidArgument;
  if (n > 0 && (p == nullptr || q == nullptr || begin == nullptr || end == nullptr)) {
    return Status::kInvalidArgument;
  }
  if ((begin_host == nullptr) != (end_host == nullptr)) return Status::kInvalidArgument;
  if (begin_host == nullptr) return Status::kOk;
  for (int64_t i = 0; i < n; ++i) {
    if (end_host[i] <= begin_host[i]) return Status::kInvalidArgument;
    if (begin_host[i] < 0 || end_host[i] > rows) return Status::kOutOfRange;
  }
  return Status::kOk;
}

// ---- InfoNCE ----

// Rows of a (blocks [0, P)) and b ([P, 2P)): xh = x / max(||x||, eps); inv, clamped: 2P.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    normalise_rows_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t P, int64_t D,
                          float* __restrict__ ah, float* __restrict__ bh, float* __restrict__ inv,
                          float* __restrict__ clamped) {
  __shared__ double red[32];
  for (int64_t row = blockIdx.x; row < 2 * P; row += gridDim.x) {
    const bool is_b = row >= P;
    const int64_t i = is_b ? row - P : row;
    const T* x = (is_b ? b : a) + i * D;
    float* xh = (is_b ? bh : ah) + i * D;
    double ss = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const double v = double(to_float(x[d]));
      ss += v * v;
    }
    ss = block_sum(ss, red);
    const double nrm = sqrt(ss);
    const bool cl = !(nrm >= kNormEps);
    const double s = 1.0 / (cl ? kNormEps : nrm);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) xh[d] = float(double(to_float(x[d])) * s);
    if (threadIdx.x == 0) {
      inv[row] = float(s);
      clamped[row] = cl ? 1.0f : 0.0f;
    }
  }
}

// Cm (M x N, ldc) = alpha * op(A) op(B), K inner; op(A)(i,k) = kTransA ? A[k lda + i] :
// A[i lda + k], op(B)(k,j) = kTransB ? B[j ldb + k] : B[k ldb + j]. Shared-memory tiles,
// one output per thread; ample for the P x P and P x D products of InfoNCE.
template <bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_kernel(int64_t M, int64_t N, int64_t K, float alpha, const float* __restrict__ A, int64_t lda,
                const float* __restrict__ B, int64_t ldb, float* __restrict__ Cm, int64_t ldc) {
  __shared__ float As[kTile][kTile + 1], Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = blockIdx.y * int64_t(kTile) + ty, j = blockIdx.x * int64_t(kTile) + tx;
  const int64_t ia = blockIdx.y * int64_t(kTile) + tx;  // row of A this thread loads (transposed)
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    // As[r][k] = op(A)(tile row r, k0 + k); Bs[k][c] = op(B)(k0 + k, tile column c). Loads
    // run along the contiguous index of each layout.
    if constexpr (kTransA) {
      const int64_t k = k0 + ty;
      As[tx][ty] = (ia < M && k < K) ? A[k * lda + ia] : 0.0f;
    } else {
      const int64_t k = k0 + tx;
      As[ty][tx] = (i < M && k < K) ? A[i * lda + k] : 0.0f;
    }
    if constexpr (kTransB) {
      const int64_t jb = blockIdx.x * int64_t(kTile) + ty, k = k0 + tx;
      Bs[tx][ty] = (jb < N && k < K) ? B[jb * ldb + k] : 0.0f;
    } else {
      const int64_t k = k0 + ty;
      Bs[ty][tx] = (k < K && j < N) ? B[k * ldb + j] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) acc += As[ty][k] * Bs[k][tx];
    __syncthreads();
  }
  if (i < M && j < N) Cm[i * ldc + j] = alpha * acc;
}

template <bool kTransA, bool kTransB>
void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
          float* Cm, int64_t ldc, cudaStream_t stream) {
  const dim3 block(kTile, kTile);
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile));
  gemm_kernel<kTransA, kTransB><<<grid, block, 0, stream>>>(M, N, K, alpha, A, lda, B, ldb, Cm, ldc);
}

// Lines [0, P) are the rows of S (a -> b), [P, 2P) its columns (b -> a); line k's target is
// element k. Per line: lse and loss = lse - S[k,k] (doubles), hit = argmax == k.
__global__ void __launch_bounds__(kThreads)
    info_nce_xent_kernel(const float* __restrict__ S, int64_t P, double* __restrict__ lse, double* __restrict__ loss,
                         int32_t* __restrict__ hit) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  __shared__ double sd[32];
  for (int64_t line = blockIdx.x; line < 2 * P; line += gridDim.x) {
    const bool col = line >= P;
    const int64_t k = col ? line - P : line;
    const int64_t base = col ? k : k * P, stride = col ? P : 1;  // element j at base + j stride
    float m = 0.0f;
    int64_t arg = -1;
    for (int64_t j = threadIdx.x; j < P; j += blockDim.x) take_better(m, arg, S[base + j * stride], j);
    arg = block_argmax(m, arg, sv, si);
    const float mx = S[base + arg * stride];
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < P; j += blockDim.x) {
      sum += exp(double(S[base + j * stride]) - double(mx));
    }
    sum = block_sum(sum, sd);
    if (threadIdx.x == 0) {
      const double l = double(mx) + log(sum);
      lse[line] = l;
      loss[line] = l - double(S[base + k * stride]);
      hit[line] = arg == k ? 1 : 0;
    }
  }
}

// *loss = sum of the 2P line losses / 2P; hits counted per direction. One block.
__global__ void __launch_bounds__(kSumThreads)
    info_nce_finalize_kernel(const double* __restrict__ line_loss, const int32_t* __restrict__ hit, int64_t P,
                             double* __restrict__ loss, int64_t* __restrict__ correct_ab,
                             int64_t* __restrict__ correct_ba) {
  __shared__ double sd[32];
  __shared__ int64_t si[32];
  double total = 0.0;
  int64_t ab = 0, ba = 0;
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) {
    total += line_loss[i] + line_loss[P + i];
    ab += hit[i];
    ba += hit[P + i];
  }
  total = block_sum(total, sd);
  ab = block_sum(ab, si);
  ba = block_sum(ba, si);
  if (threadIdx.x == 0) {
    *loss = total / double(2 * P);
    if (correct_ab != nullptr) *correct_ab = ab;
    if (correct_ba != nullptr) *correct_ba = ba;
  }
}

// In place: S[i,j] becomes dL/dS = k ((softmax_row_i - I) + (softmax_col_j - I))[i,j].
__global__ void info_nce_grad_kernel(float* __restrict__ S, int64_t P, const double* __restrict__ lse, float k) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < P * P;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / P, j = idx - i * P;
    const double s = double(S[idx]), diag = i == j ? 1.0 : 0.0;
    const float r = float(exp(s - lse[i]) - diag);
    const float c = float(exp(s - lse[P + j]) - diag);
    S[idx] = k * (r + c);
  }
}

// out (=) dL/dx = (g - x̂ (x̂ . g)) / ||x||, or g / eps where the norm was clamped. One block
// per row of P.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    normalise_backward_kernel(const float* __restrict__ g, const float* __restrict__ xh, const float* __restrict__ inv,
                              const float* __restrict__ clamped, int64_t P, int64_t D, T* __restrict__ out) {
  __shared__ double red[32];
  for (int64_t i = blockIdx.x; i < P; i += gridDim.x) {
    const float* gi = g + i * D;
    const float* hi = xh + i * D;
    double dot = 0.0;
    if (clamped[i] == 0.0f) {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dot += double(hi[d]) * double(gi[d]);
    }
    dot = block_sum(dot, red);
    const double s = double(inv[i]);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      out[i * D + d] = from_float<T>(float(s * (double(gi[d]) - double(hi[d]) * dot)));
    }
  }
}

// ---- per-row losses ----

// *loss_sum = sum of n row losses; *count (if not nullptr) = rows with mask >= 0 (all when
// mask is nullptr). One block, fixed order.
__global__ void __launch_bounds__(kSumThreads)
    sum_rows_kernel(const double* __restrict__ row_loss, const int32_t* __restrict__ mask, int64_t n,
                    double* __restrict__ loss_sum, int64_t* __restrict__ count) {
  __shared__ double sd[32];
  __shared__ int64_t si[32];
  double total = 0.0;
  int64_t used = 0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    total += row_loss[r];
    used += mask == nullptr || mask[r] >= 0;
  }
  total = block_sum(total, sd);
  used = block_sum(used, si);
  if (threadIdx.x == 0) {
    *loss_sum = total;
    if (count != nullptr) *count = used;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    mse_rows_kernel(const T* __restrict__ pred, const T* __restrict__ target, int64_t n, int64_t D, float k,
                    T* __restrict__ dpred, double* __restrict__ row_loss) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const int64_t off = r * D;
    double s = 0.0;
    for (int64_t v = threadIdx.x; v < D; v += blockDim.x) {
      const float p = to_float(pred[off + v]), t = to_float(target[off + v]);
      const double diff = double(p) - double(t);
      s += diff * diff;
      if (dpred != nullptr) dpred[off + v] = from_float<T>(k * (p - t));
    }
    s = block_sum(s, red);
    if (threadIdx.x == 0) row_loss[r] = s / double(D);
  }
}

// One row per block, three passes as the CPU's kl_row: maxima; exp sums and the cross term;
// the gradient. Exp arguments are (z - max) / T and differences (t - s) / T for student and
// teacher alike, and the gradient is (e_s - e_t r) k with r = sum_s / sum_t, so identical
// rows give exactly 0 loss and gradient.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    kl_distill_kernel(const T* __restrict__ student, const T* __restrict__ teacher, const int32_t* __restrict__ mask,
                      int64_t n, int64_t V, float temperature, float gs, T* __restrict__ dstudent,
                      double* __restrict__ row_loss) {
  __shared__ float redf[32];
  __shared__ double redd[32];
  const float inv_t = 1.0f / temperature;
  const double tt = double(temperature);
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const T* zs = student + r * V;
    const T* zt = teacher + r * V;
    T* d = dstudent != nullptr ? dstudent + r * V : nullptr;
    if (mask != nullptr && mask[r] < 0) {  // uniform over the block
      if (d != nullptr) {
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = from_float<T>(0.0f);
      }
      if (threadIdx.x == 0) row_loss[r] = 0.0;
      continue;
    }
    float ms = -INFINITY, mt = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      ms = fmaxf(ms, to_float(zs[v]));
      mt = fmaxf(mt, to_float(zt[v]));
    }
    ms = block_max(ms, redf);
    mt = block_max(mt, redf);
    double sum_s = 0.0, sum_t = 0.0, cross = 0.0;  // cross = sum e_t (t - s) / T
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float s = to_float(zs[v]), t = to_float(zt[v]);
      const float et = expf((t - mt) * inv_t);
      sum_s += double(expf((s - ms) * inv_t));
      sum_t += double(et);
      cross += double(et * ((t - s) * inv_t));
    }
    sum_s = block_sum(sum_s, redd);
    sum_t = block_sum(sum_t, redd);
    cross = block_sum(cross, redd);
    if (d != nullptr) {
      const float k = float(double(gs) * tt / sum_s);
      const float ratio = float(sum_s / sum_t);
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
        const float es = expf((to_float(zs[v]) - ms) * inv_t);
        const float et = expf((to_float(zt[v]) - mt) * inv_t);
        d[v] = from_float<T>((es - et * ratio) * k);
      }
    }
    if (threadIdx.x == 0) {
      // log p_t - log p_s = (t - s) / T - (mt - ms) / T - (log sum_t - log sum_s).
      const double shift = (double(mt) - double(ms)) / tt + (log(sum_t) - log(sum_s));
      row_loss[r] = tt * tt * (cross / sum_t - shift);
    }
  }
}

Status check_row_scratch(int64_t n, const void* scratch, size_t scratch_bytes) {
  if (n == 0) return Status::kOk;
  if (scratch == nullptr || !aligned8(scratch) || scratch_bytes < size_t(n) * sizeof(double)) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

}  // namespace

template <typename T>
Status segment_mean(T* out, const T* x, int64_t rows, int64_t C, const int32_t* begin, const int32_t* end, int64_t n,
                    const int32_t* begin_host, const int32_t* end_host, cudaStream_t stream) {
  const Status st = check_segment_args(out, x, rows, C, begin, end, n, begin_host, end_host);
  if (st != Status::kOk || n == 0) return st;
  const dim3 grid(grid_blocks(C, kThreads, INT_MAX), unsigned(std::min(n, kMaxGrid)));
  segment_mean_kernel<T><<<grid, kThreads, 0, stream>>>(out, x, rows, C, begin, end, n);
  return launched();
}

template <typename T>
Status segment_mean_backward(T* dx, const T* dout, int64_t rows, int64_t C, const int32_t* begin, const int32_t* end,
                             int64_t n, const int32_t* begin_host, const int32_t* end_host, cudaStream_t stream) {
  const Status st = check_segment_args(dx, dout, rows, C, begin, end, n, begin_host, end_host);
  if (st != Status::kOk || n == 0 || rows == 0) return st;
  const dim3 grid(grid_blocks(C, kThreads, INT_MAX), unsigned(std::min(rows, kMaxGrid)));
  segment_mean_backward_kernel<T><<<grid, kThreads, 0, stream>>>(dx, dout, rows, C, begin, end, n);
  return launched();
}

// Floats: lse and line losses (2P doubles each), hits (2P int32), inverse norms and clamp
// flags (2P each), â and b̂ (P x D each), S then its gradient (P x P), one P x D gradient.
size_t info_nce_scratch_floats(int64_t P, int64_t D) {
  if (P <= 0 || D <= 0) return 0;
  return 14 * size_t(P) + 3 * size_t(P) * size_t(D) + size_t(P) * size_t(P);
}

template <typename T>
Status info_nce(const T* a, const T* b, int64_t P, int64_t D, float temperature, double* loss, int64_t* correct_ab,
                int64_t* correct_ba, float grad_scale, T* da, T* db, float* scratch, size_t scratch_floats,
                cudaStream_t stream) {
  if (a == nullptr || b == nullptr || loss == nullptr || scratch == nullptr || P < 2 || D <= 0 ||
      !valid_temperature(temperature)) {
    return Status::kInvalidArgument;
  }
  if ((da == nullptr) != (db == nullptr)) return Status::kInvalidArgument;
  if (P > kMaxInfoNceDim || D > kMaxInfoNceDim) return Status::kNotSupported;
  if (scratch_floats < info_nce_scratch_floats(P, D) || !aligned8(scratch)) {
    return Status::kInvalidArgument;
  }
  double* lse = reinterpret_cast<double*>(scratch);                // 2P
  double* line_loss = reinterpret_cast<double*>(scratch + 4 * P);  // 2P
  int32_t* hit = reinterpret_cast<int32_t*>(scratch + 8 * P);      // 2P
  float* inv = scratch + 10 * P;                                   // 2P: a rows, then b rows
  float* clamped = scratch + 12 * P;                               // 2P
  float* ah = scratch + 14 * P;
  float* bh = ah + P * D;
  float* S = bh + P * D;   // P x P: logits, then their gradient G
  float* tmp = S + P * P;  // P x D: dâ, then db̂

  const unsigned line_blocks = unsigned(std::min(2 * P, kMaxGrid));
  normalise_rows_kernel<T><<<line_blocks, kThreads, 0, stream>>>(a, b, P, D, ah, bh, inv, clamped);
  gemm<false, true>(P, P, D, 1.0f / temperature, ah, D, bh, D, S, P, stream);  // S = â b̂^T / T
  info_nce_xent_kernel<<<line_blocks, kThreads, 0, stream>>>(S, P, lse, line_loss, hit);
  info_nce_finalize_kernel<<<1, kSumThreads, 0, stream>>>(line_loss, hit, P, loss, correct_ab, correct_ba);
  if (da == nullptr) return launched();

  const float k = float(double(grad_scale) / (2.0 * double(P) * double(temperature)));
  info_nce_grad_kernel<<<grid_blocks(P * P, kThreads, 4096), kThreads, 0, stream>>>(S, P, lse, k);
  const unsigned row_blocks = unsigned(std::min(P, kMaxGrid));
  gemm<false, false>(P, D, P, 1.0f, S, P, bh, D, tmp, D, stream);  // dâ = G b̂
  normalise_backward_kernel<T><<<row_blocks, kThreads, 0, stream>>>(tmp, ah, inv, clamped, P, D, da);
  gemm<true, false>(P, D, P, 1.0f, S, P, ah, D, tmp, D, stream);  // db̂ = G^T â
  normalise_backward_kernel<T><<<row_blocks, kThreads, 0, stream>>>(tmp, bh, inv + P, clamped + P, P, D, db);
  return launched();
}

size_t mse_rows_scratch_bytes(int64_t n) { return n > 0 ? size_t(n) * sizeof(double) : 0; }

template <typename T>
Status mse_rows(const T* pred, const T* target, int64_t n, int64_t D, double* loss_sum, float grad_scale, T* dpred,
                void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (loss_sum == nullptr || n < 0 || D <= 0) return Status::kInvalidArgument;
  if (n > 0 && (pred == nullptr || target == nullptr)) return Status::kInvalidArgument;
  const Status st = check_row_scratch(n, scratch, scratch_bytes);
  if (st != Status::kOk) return st;
  double* row_loss = static_cast<double*>(scratch);
  if (n > 0) {
    const float k = float(2.0 * double(grad_scale) / double(D));
    mse_rows_kernel<T>
        <<<unsigned(std::min(n, kMaxGrid)), kThreads, 0, stream>>>(pred, target, n, D, k, dpred, row_loss);
  }
  sum_rows_kernel<<<1, kSumThreads, 0, stream>>>(row_loss, nullptr, n, loss_sum, nullptr);
  return launched();
}

size_t kl_distill_scratch_bytes(int64_t n) { return n > 0 ? size_t(n) * sizeof(double) : 0; }

template <typename T>
Status kl_distill(const T* student, const T* teacher, const int32_t* mask, int64_t n, int64_t V, float temperature,
                  double* loss_sum, int64_t* count, float grad_scale, T* dstudent, void* scratch, size_t scratch_bytes,
                  cudaStream_t stream) {
  if (loss_sum == nullptr || count == nullptr || n < 0 || V <= 0 || !valid_temperature(temperature)) {
    return Status::kInvalidArgument;
  }
  if (n > 0 && (student == nullptr || teacher == nullptr)) return Status::kInvalidArgument;
  const Status st = check_row_scratch(n, scratch, scratch_bytes);
  if (st != Status::kOk) return st;
  double* row_loss = static_cast<double*>(scratch);
  if (n > 0) {
    kl_distill_kernel<T><<<unsigned(std::min(n, kMaxGrid)), kThreads, 0, stream>>>(
        student, teacher, mask, n, V, temperature, grad_scale, dstudent, row_loss);
  }
  sum_rows_kernel<<<1, kSumThreads, 0, stream>>>(row_loss, mask, n, loss_sum, count);
  return launched();
}

#define CASTOR_INSTANTIATE(T)                                                                                          \
  template Status segment_mean<T>(T*, const T*, int64_t, int64_t, const int32_t*, const int32_t*, int64_t,             \
                                  const int32_t*, const int32_t*, cudaStream_t);                                       \
  template Status segment_mean_backward<T>(T*, const T*, int64_t, int64_t, const int32_t*, const int32_t*, int64_t,    \
                                           const int32_t*, const int32_t*, cudaStream_t);                              \
  template Status info_nce<T>(const T*, const T*, int64_t, int64_t, float, double*, int64_t*, int64_t*, float, T*, T*, \
                              float*, size_t, cudaStream_t);                                                           \
  template Status mse_rows<T>(const T*, const T*, int64_t, int64_t, double*, float, T*, void*, size_t, cudaStream_t);  \
  template Status kl_distill<T>(const T*, const T*, const int32_t*, int64_t, int64_t, float, double*, int64_t*, float, \
                                T*, void*, size_t, cudaStream_t);
CASTOR_INSTANTIATE(float)
CASTOR_INSTANTIATE(bf16)
CASTOR_INSTANTIATE(f16)
#undef CASTOR_INSTANTIATE

}  // namespace castor::kernels::cuda
