// Fused AdamW: one thread per element, grid-stride loop; bias corrections computed once
// on the host. Mirrors kernels/cpu/optim.cpp.
#include "kernels/cuda/adamw.cuh"

#include "kernels/cuda/common.cuh"

#include <cmath>

namespace castor::kernels::cuda {
namespace {

__global__ void adamw_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, float grad_scale, float inv_bc1, float inv_bc2) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float grad = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps);
    w[i] -= lr * (update + weight_decay * w[i]);
  }
}

}  // namespace

Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h,
                  cudaStream_t stream) {
  if (n < 0 || h.step < 1 || (n > 0 && (!w || !g || !m || !v))) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(h.beta1), double(h.step))));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(h.beta2), double(h.step))));
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535);
  adamw_kernel<<<unsigned(blocks), threads, 0, stream>>>(w, g, m, v, n, h.lr, h.beta1, h.beta2, h.eps,
                                                         h.weight_decay, h.grad_scale, inv_bc1, inv_bc2);
  return launched();
}

}  // namespace castor::kernels::cuda
