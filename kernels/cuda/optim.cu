// Optimizer kernels (see optim.cuh). AdamW and the unscale are one thread per element in a
// grid-stride loop, bias corrections computed once on the host. sum_squares: each block sums
// a fixed grid-stride subset in double and writes one partial; a single block adds the
// partials with a fixed tree. No atomics: results depend on n only.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/optim.cuh"

namespace castor::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSumThreads = 1024;       // the single block of the final sum
constexpr int64_t kMaxPartials = 1024;  // blocks of the first sum_squares pass
constexpr int64_t kPerThreadMin = 4;    // elements per thread before adding blocks

__global__ void adamw_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, float grad_scale, float inv_bc1, float inv_bc2,
                             bf16* __restrict__ w16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps);
    const float wi = w[i] - lr * (update + weight_decay * w[i]);
    w[i] = wi;
    if (w16 != nullptr) w16[i] = __float2bfloat16_rn(wi);
  }
}

// partial[blockIdx.x] = sum of g[i]^2 over this block's grid-stride subset.
__global__ void __launch_bounds__(kThreads)
    sum_squares_partial_kernel(const float* __restrict__ g, int64_t n, double* __restrict__ partial) {
  __shared__ double red[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double x = double(g[i]);
    s += x * x;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// *out = sum of the partials (0 when there are none). One block.
__global__ void __launch_bounds__(kSumThreads)
    sum_partials_kernel(const double* __restrict__ partial, int64_t count, double* __restrict__ out) {
  __shared__ double red[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = s;
}

__global__ void unscale_kernel(float* __restrict__ g, int64_t n, float inv_scale, int32_t* __restrict__ found_inf) {
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = g[i] * inv_scale;
    g[i] = x;
    bad = bad || !isfinite(x);
  }
  if (bad) *found_inf = 1;  // every writer stores the same value
}

// Blocks of the first sum_squares pass: a function of n alone (determinism).
int64_t sum_squares_blocks(int64_t n) {
  return std::clamp<int64_t>((n + kThreads * kPerThreadMin - 1) / (kThreads * kPerThreadMin), 1, kMaxPartials);
}

// The CPU kernel's checks (kernels/cpu/optim.cpp), in its order.
Status check_adamw_args(const float* w, const float* g, const float* m, const float* v, int64_t n,
                        const cpu::AdamWHyper& h) {
  if (n < 0 || h.step < 1) return Status::kInvalidArgument;
  if (!(h.beta1 >= 0.0f && h.beta1 < 1.0f) || !(h.beta2 >= 0.0f && h.beta2 < 1.0f) || !(h.eps >= 0.0f) ||
      !std::isfinite(h.lr) || !std::isfinite(h.weight_decay) || !std::isfinite(h.grad_scale)) {
    return Status::kInvalidArgument;
  }
  if (n > 0 && (!w || !g || !m || !v)) return Status::kInvalidArgument;
  return Status::kOk;
}

}  // namespace

Status adamw_step_bf16copy(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h, bf16* w16,
                           cudaStream_t stream) {
  const Status st = check_adamw_args(w, g, m, v, n, h);
  if (st != Status::kOk || n == 0) return st;
  // Bias corrections in double: beta^step underflows gracefully, 1 - beta^step stays exact.
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(h.beta1), double(h.step))));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(h.beta2), double(h.step))));
  adamw_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(w, g, m, v, n, h.lr, h.beta1, h.beta2, h.eps,
                                                                  h.weight_decay, h.grad_scale, inv_bc1, inv_bc2, w16);
  return launched();
}

Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h,
                  cudaStream_t stream) {
  return adamw_step_bf16copy(w, g, m, v, n, h, nullptr, stream);
}

size_t sum_squares_scratch_bytes(int64_t n) { return n > 0 ? size_t(sum_squares_blocks(n)) * sizeof(double) : 0; }

Status sum_squares(double* out, const float* g, int64_t n, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (n < 0 || out == nullptr) return Status::kInvalidArgument;
  if (n == 0) {
    sum_partials_kernel<<<1, kSumThreads, 0, stream>>>(nullptr, 0, out);  // *out = 0
    return launched();
  }
  if (g == nullptr || scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % alignof(double) != 0 ||
      scratch_bytes < sum_squares_scratch_bytes(n)) {
    return Status::kInvalidArgument;
  }
  const int64_t blocks = sum_squares_blocks(n);
  double* partial = static_cast<double*>(scratch);
  sum_squares_partial_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(g, n, partial);
  sum_partials_kernel<<<1, kSumThreads, 0, stream>>>(partial, blocks, out);
  return launched();
}

Status unscale_and_check(float* g, int64_t n, float inv_scale, int32_t* found_inf, cudaStream_t stream) {
  if (n < 0 || found_inf == nullptr || !std::isfinite(inv_scale)) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (g == nullptr) return Status::kInvalidArgument;
  unscale_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(g, n, inv_scale, found_inf);
  return launched();
}

}  // namespace castor::kernels::cuda
