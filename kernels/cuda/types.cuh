// Storage types of the CUDA kernels, includable from host C++ (g++) as well as nvcc.
// Activations and compute weights are stored as T = float or bf16 (explicit template
// instantiations for both live in each .cu file); arithmetic and accumulation are fp32.
// Gradient arenas, master weights, moments and per-row statistics stay fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace castor::kernels::cuda {

using bf16 = __nv_bfloat16;

}  // namespace castor::kernels::cuda
