// Storage types of the CUDA kernels, includable from host C++ (g++) as well as nvcc.
// Activations and compute weights are stored as T = float, bf16 or f16 (explicit template
// instantiations for all three live in each .cu file); arithmetic and accumulation are fp32.
// Gradient arenas, master weights, moments and per-row statistics stay fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace castor::kernels::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;

}  // namespace castor::kernels::cuda
