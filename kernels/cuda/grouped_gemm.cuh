// Grouped expert GEMMs of the MoE layer through cuBLAS: local expert e owns rows
// [offsets[e], offsets[e+1]) of a row-major (M_total, K) input and its own weight
// W_e = W + e * N_out * K (N_out, K), experts back to back. offsets live on the HOST: the
// caller copies moe_plan's E + 1 offsets to the host once per layer. One cublasGemmEx per
// non-empty expert, fp32 compute (CUBLAS_COMPUTE_32F, no TF32). castor_kernels_cuda must link CUDA::cublas.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

struct cublasContext;  // cuBLAS's handle (cublasHandle_t = cublasContext*); callers need no cuBLAS header

namespace castor::kernels::cuda {

// Owns one cuBLAS handle; make, use on any stream (each call sets it), destroy. Not thread-safe.
struct GroupedGemmContext {
  cublasContext* cublas = nullptr;
};
Status make_grouped_gemm_context(GroupedGemmContext* ctx);   // kDeviceError when cuBLAS cannot start
void destroy_grouped_gemm_context(GroupedGemmContext* ctx);  // safe on an empty context

// Y_e (=) X_e W_e^T: Y rows [offsets[e], offsets[e+1]) of a (M_total, N_out) output.
template <typename T>
Status grouped_gemm(const GroupedGemmContext& ctx, T* Y, const T* X, const T* W, const int64_t* offsets, int64_t E,
                    int64_t N_out, int64_t K, cudaStream_t stream);

// dX_e (=) dY_e W_e: rows of a (M_total, K) input gradient from the (M_total, N_out) dY.
template <typename T>
Status grouped_gemm_dx(const GroupedGemmContext& ctx, T* dX, const T* dY, const T* W, const int64_t* offsets, int64_t E,
                       int64_t N_out, int64_t K, cudaStream_t stream);

// dW_e (+=) dY_e^T X_e into the fp32 gradient dW (E x N_out x K); experts with no rows keep dW_e.
template <typename T>
Status grouped_gemm_dw(const GroupedGemmContext& ctx, float* dW, const T* dY, const T* X, const int64_t* offsets,
                       int64_t E, int64_t N_out, int64_t K, cudaStream_t stream);

}  // namespace castor::kernels::cuda
