// LM head + softmax cross-entropy, a chunk of rows at a time, mirroring
// kernels/cpu/lm_head_xent.cpp: a cuBLASLt GEMM forms the chunk's fp32 logits, one block
// per row finds max and sum of exponentials in one online pass and turns the row into T
// dlogits (in place for float), a single block sums the chunk's row losses by a fixed tree
// (deterministic, no atomics), and two GEMMs push dlogits into dx (=) and dw (+=).
#include "kernels/cuda/lm_head_xent.cuh"

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kRowThreads = 512;
constexpr int kReduceThreads = 512;  // a power of two: the tree below halves it

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Byte offsets into the scratch: fp32 logits, T dlogits (the logits themselves for
// float), one double per row for its loss.
struct ScratchLayout {
  size_t logits = 0, dlogits = 0, losses = 0, total = 0;
};

ScratchLayout scratch_layout(int64_t chunk_rows, int64_t V, size_t dtype_size) {
  const size_t tile = size_t(chunk_rows) * size_t(V);
  const bool in_place = dtype_size == sizeof(float);
  ScratchLayout s;
  s.logits = 0;
  s.dlogits = in_place ? 0 : align256(tile * sizeof(float));
  s.losses = in_place ? align256(tile * sizeof(float)) : s.dlogits + align256(tile * dtype_size);
  s.total = s.losses + align256(size_t(chunk_rows) * sizeof(double));
  return s;
}

__device__ __forceinline__ void store4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4(bf16* p, float a, float b, float c, float d) {
  __nv_bfloat162* q = reinterpret_cast<__nv_bfloat162*>(p);
  q[0] = __floats2bfloat162_rn(a, b);
  q[1] = __floats2bfloat162_rn(c, d);
}
__device__ __forceinline__ void store4(f16* p, float a, float b, float c, float d) {
  __half2* q = reinterpret_cast<__half2*>(p);
  q[0] = __floats2half2_rn(a, b);
  q[1] = __floats2half2_rn(c, d);
}

// Online softmax normaliser: m is the running max, s the sum of exp(v - m) so far.
__device__ __forceinline__ void online_add(float v, float& m, float& s) {
  if (v > m) {
    s = s * expf(m - v) + 1.0f;
    m = v;
  } else {
    s += expf(v - m);
  }
}

// One block per row of the chunk. Loss = max + log(sum exp(l - max)) - l[t] (in double, as
// the CPU); backward: dlogits = g (softmax - onehot(t)), g = grad_scale * row_scale[row].
// For T = float, dlogits aliases logits: each element is read, then written, by one thread,
// and every read of the first pass precedes the barriers in block_max / block_sum.
// kVec4 (V % 4 == 0): rows start 16-byte aligned, so whole float4s are read.
template <typename T, bool kVec4>
__global__ void __launch_bounds__(kRowThreads)
    xent_rows_kernel(const float* logits, T* dlogits, const int32_t* targets, const float* row_scale, int64_t V,
                     float grad_scale, bool backward, double* chunk_losses, double* row_losses) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* row = logits + r * V;
  T* drow = dlogits + r * V;
  const int32_t t = targets[r];

  if (t < 0 || t >= V) {  // ignored (-1) or out of range (NaN loss); uniform over the block
    if (threadIdx.x == 0) {
      const double loss = t == -1 ? 0.0 : double(NAN);
      chunk_losses[r] = loss;
      if (row_losses) row_losses[r] = loss;
    }
    if (backward) {
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) drow[j] = from_float<T>(0.0f);
    }
    return;
  }

  const float target_logit = row[t];  // read before any thread overwrites the row
  float m = -INFINITY, s = 0.0f;
  if (kVec4) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
      const float4 v = row4[j];
      online_add(v.x, m, s);
      online_add(v.y, m, s);
      online_add(v.z, m, s);
      online_add(v.w, m, s);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) online_add(row[j], m, s);
  }
  const float row_max = block_max(m, shared);
  const float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - row_max), shared);

  if (threadIdx.x == 0) {
    const double loss = double(row_max) + log(double(sum)) - double(target_logit);
    chunk_losses[r] = loss;
    if (row_losses) row_losses[r] = loss;
  }
  if (!backward) return;

  const float g = row_scale ? grad_scale * row_scale[r] : grad_scale;
  const float k = g / sum;
  if (kVec4) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
      const float4 v = row4[j];
      const int64_t c = 4 * j;
      store4(drow + c, expf(v.x - row_max) * k - (c == t ? g : 0.0f), expf(v.y - row_max) * k - (c + 1 == t ? g : 0.0f),
             expf(v.z - row_max) * k - (c + 2 == t ? g : 0.0f), expf(v.w - row_max) * k - (c + 3 == t ? g : 0.0f));
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      drow[j] = from_float<T>(expf(row[j] - row_max) * k - (j == t ? g : 0.0f));
    }
  }
}

// One block: the chunk's row losses and counted rows, summed by a fixed tree, added to
// the result in chunk order (the first chunk overwrites it).
__global__ void __launch_bounds__(kReduceThreads)
    xent_reduce_kernel(const double* chunk_losses, const int32_t* targets, int64_t rows, bool first,
                       XentDeviceResult* result) {
  __shared__ double sums[kReduceThreads];
  __shared__ long long counts[kReduceThreads];
  double s = 0.0;
  long long c = 0;
  for (int64_t r = threadIdx.x; r < rows; r += kReduceThreads) {
    s += chunk_losses[r];
    c += targets[r] >= 0;
  }
  sums[threadIdx.x] = s;
  counts[threadIdx.x] = c;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) {
      sums[threadIdx.x] += sums[threadIdx.x + half];
      counts[threadIdx.x] += counts[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    result->loss_sum = first ? sums[0] : result->loss_sum + sums[0];
    result->count = first ? int64_t(counts[0]) : result->count + int64_t(counts[0]);
  }
}

template <typename T>
Status launch_rows(const float* logits, T* dlogits, const int32_t* targets, const float* row_scale, int64_t rows,
                   int64_t V, float grad_scale, bool backward, double* chunk_losses, double* row_losses,
                   cudaStream_t stream) {
  if (V % 4 == 0) {
    xent_rows_kernel<T, true><<<unsigned(rows), kRowThreads, 0, stream>>>(
        logits, dlogits, targets, row_scale, V, grad_scale, backward, chunk_losses, row_losses);
  } else {
    xent_rows_kernel<T, false><<<unsigned(rows), kRowThreads, 0, stream>>>(
        logits, dlogits, targets, row_scale, V, grad_scale, backward, chunk_losses, row_losses);
  }
  return launched();
}

}  // namespace

size_t lm_head_xent_scratch_bytes(int64_t chunk_rows, int64_t V, size_t dtype_size) {
  if (chunk_rows <= 0 || V <= 0 || (dtype_size != sizeof(float) && dtype_size != sizeof(bf16))) return 0;
  return scratch_layout(chunk_rows, V, dtype_size).total;
}

template <typename T>
Status lm_head_xent(const GemmContext& ctx, XentDeviceResult* result, const T* x, const T* w, const int32_t* targets,
                    int64_t N, int64_t C, int64_t V, float grad_scale, T* dx, float* dw, void* scratch,
                    int64_t chunk_rows, const float* row_scale, double* row_losses, cudaStream_t stream) {
  if (result == nullptr || N < 0 || C <= 0 || V <= 0 || chunk_rows <= 0) return Status::kInvalidArgument;
  if (C > INT_MAX || V > INT_MAX || chunk_rows > INT_MAX) return Status::kInvalidArgument;
  if (N > 0 && (x == nullptr || w == nullptr || targets == nullptr || scratch == nullptr)) {
    return Status::kInvalidArgument;
  }
  if (dx != nullptr && dw == nullptr) return Status::kInvalidArgument;
  if (reinterpret_cast<uintptr_t>(scratch) % 16 != 0 || ctx.handle == nullptr) return Status::kInvalidArgument;
  if (N == 0) {
    return cudaMemsetAsync(result, 0, sizeof *result, stream) == cudaSuccess ? Status::kOk : Status::kDeviceError;
  }

  const ScratchLayout layout = scratch_layout(chunk_rows, V, sizeof(T));
  char* base = static_cast<char*>(scratch);
  float* logits = reinterpret_cast<float*>(base + layout.logits);
  T* dlogits = reinterpret_cast<T*>(base + layout.dlogits);
  double* chunk_losses = reinterpret_cast<double*>(base + layout.losses);
  const bool backward = dx != nullptr;

  for (int64_t c0 = 0; c0 < N; c0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, N - c0);
    const T* xc = x + c0 * C;
    // logits = x_chunk W^T  (rows x V), fp32
    Status s = gemm<T, float>(ctx, false, true, rows, V, C, 1.0f, xc, C, w, C, 0.0f, logits, V, stream);
    if (s != Status::kOk) return s;
    s = launch_rows<T>(logits, dlogits, targets + c0, row_scale ? row_scale + c0 : nullptr, rows, V, grad_scale,
                       backward, chunk_losses, row_losses ? row_losses + c0 : nullptr, stream);
    if (s != Status::kOk) return s;
    xent_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(chunk_losses, targets + c0, rows, c0 == 0, result);
    if ((s = launched()) != Status::kOk) return s;
    if (!backward) continue;
    // dx_chunk = dlogits W  (rows x C);  dW += dlogits^T x_chunk  (V x C)
    s = gemm<T, T>(ctx, false, false, rows, C, V, 1.0f, dlogits, V, w, C, 0.0f, dx + c0 * C, C, stream);
    if (s != Status::kOk) return s;
    s = gemm<T, float>(ctx, true, false, V, C, rows, 1.0f, dlogits, V, xc, C, 1.0f, dw, C, stream);
    if (s != Status::kOk) return s;
  }
  return Status::kOk;
}

template Status lm_head_xent<float>(const GemmContext&, XentDeviceResult*, const float*, const float*, const int32_t*,
                                    int64_t, int64_t, int64_t, float, float*, float*, void*, int64_t, const float*,
                                    double*, cudaStream_t);
template Status lm_head_xent<bf16>(const GemmContext&, XentDeviceResult*, const bf16*, const bf16*, const int32_t*,
                                   int64_t, int64_t, int64_t, float, bf16*, float*, void*, int64_t, const float*,
                                   double*, cudaStream_t);
template Status lm_head_xent<f16>(const GemmContext&, XentDeviceResult*, const f16*, const f16*, const int32_t*,
                                  int64_t, int64_t, int64_t, float, f16*, float*, void*, int64_t, const float*, double*,
                                  cudaStream_t);

}  // namespace castor::kernels::cuda
