// Row-major GEMM on a CUDA stream through cuBLASLt, mirroring kernels/cpu/gemm.h:
// C = alpha * op(A) @ op(B) + beta * C, M x N result, K inner, lda/ldb/ldc row strides.
// A, B are T (float, bf16 or f16); C is T or float (<bf16, float>: weight gradients += into the
// fp32 grad arena with beta = 1). Compute is fp32 (CUBLAS_COMPUTE_32F: float matches the
// CPU reference; TF32 only if GemmContext::allow_tf32). beta = 0 overwrites C (NaN ignored).
// A GemmContext owns the cuBLASLt handle and caches one plan per call shape; see below.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

struct cublasLtContext;  // cuBLASLt's handle: cublasLtHandle_t is cublasLtContext*

namespace castor::kernels::cuda {

struct GemmPlanCache;  // gemm.cu: matmul descriptors + heuristic algorithm per call shape

// The cuBLASLt handle, the caller's workspace (256-byte aligned device memory; 32 MiB is
// what cuBLASLt suggests for Hopper) and the plan cache (host memory, behind a mutex).
// Calls on one context share its workspace: use one context per stream.
struct GemmContext {
  cublasLtContext* handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool allow_tf32 = false;  // float inputs: CUBLAS_COMPUTE_32F_FAST_TF32 instead of 32F
  GemmPlanCache* plans = nullptr;
};

// Creates the handle and an empty plan cache. kInvalidArgument: null ctx, workspace null
// with bytes > 0, or not 256-byte aligned; kDeviceError: cublasLtCreate failed.
Status make_gemm_context(GemmContext* ctx, void* workspace, size_t workspace_bytes);
// Frees the plans and the handle (not the workspace) and resets *ctx; null ctx: invalid.
Status destroy_gemm_context(GemmContext* ctx);

// Same sizes, checks and Status codes as cpu::gemm, plus kInvalidArgument for a context
// without a handle, kNotSupported when cuBLASLt has no algorithm for the shape/alignment.
// Instantiated for <float, float>, <bf16, bf16>, <bf16, float>, <f16, f16>, <f16, float>.
template <typename T, typename Tc>
Status gemm(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const T* A, int64_t lda, const T* B, int64_t ldb, float beta, Tc* C, int64_t ldc, cudaStream_t stream);

// gemm with a bias (N values, one per output column) added in cuBLASLt's epilogue:
// C = alpha op(A) op(B) + beta C + bias. bias null: kInvalidArgument; K == 0: kNotSupported.
// Instantiated for T = float, bf16 and f16 (C is T: a forward activation).
template <typename T>
Status gemm_bias(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const T* A, int64_t lda, const T* B, int64_t ldb, float beta, T* C, int64_t ldc, const T* bias,
                 cudaStream_t stream);

// As gemm_bias, then C = gelu(pre) with gelu the tanh approximation of cpu::gelu_forward,
// pre = alpha op(A) op(B) + beta C + bias. If pre_gelu != nullptr, pre is also stored there
// (M rows, row stride ld_pre) for the backward pass; cuBLASLt needs ld_pre >= N
// (kInvalidArgument) and a multiple of 8 (kNotSupported). ld_pre is ignored without pre_gelu.
template <typename T>
Status gemm_bias_gelu(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const T* A, int64_t lda, const T* B, int64_t ldb, float beta, T* C, int64_t ldc, const T* bias,
                      T* pre_gelu, int64_t ld_pre, cudaStream_t stream);

}  // namespace castor::kernels::cuda
