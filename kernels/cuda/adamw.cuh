// Fused AdamW over a flat fp32 range of the parameter arena, on a CUDA stream. Same
// math and hyper-parameters as kernels/cpu/optim.h (the CPU kernel is its reference).
// The first CUDA kernel of castor; the rest of the backend arrives with the GPU issue.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/optim.h"
#include "kernels/status.h"

namespace castor::kernels::cuda {

Status adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const cpu::AdamWHyper& h,
                  cudaStream_t stream);

}  // namespace castor::kernels::cuda
