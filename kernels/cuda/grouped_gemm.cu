// Grouped expert GEMMs (see grouped_gemm.cuh): a host loop over experts, one cublasGemmEx
// each. Row-major operands are cuBLAS's column-major transposes, so each product is issued
// for the transposed result (Y^T = W X^T, dX^T = W^T dY^T, dW^T += X^T dY) with swapped
// operands. Inputs T (fp32, bf16 or fp16), compute fp32, dW fp32 with beta = 1 (accumulate).
#include <cublas_v2.h>

#include <climits>
#include <type_traits>

#include "kernels/cuda/grouped_gemm.cuh"

namespace castor::kernels::cuda {
namespace {

template <typename T>
constexpr cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, f16>)
    return CUDA_R_16F;
  else
    return CUDA_R_16BF;
}

// Shared checks: offsets (host, E + 1) non-negative and non-decreasing; sizes within cuBLAS's
// int (kNotSupported beyond).
Status check_grouped(const GroupedGemmContext& ctx, const int64_t* offsets, int64_t E, int64_t N_out, int64_t K) {
  if (!ctx.cublas || !offsets || E < 0 || N_out <= 0 || K <= 0) return Status::kInvalidArgument;
  if (offsets[0] < 0) return Status::kInvalidArgument;
  for (int64_t e = 0; e < E; ++e)
    if (offsets[e + 1] < offsets[e]) return Status::kInvalidArgument;
  if (N_out > INT_MAX || K > INT_MAX) return Status::kNotSupported;
  for (int64_t e = 0; e < E; ++e)
    if (offsets[e + 1] - offsets[e] > INT_MAX) return Status::kNotSupported;
  return Status::kOk;
}

// One column-major cublasGemmEx: C (m x n, ldc) = alpha op(A) op(B) + beta C, A and B of type
// T, C of type TC, fp32 compute.
template <typename T, typename TC>
Status cublas_gemm(const GroupedGemmContext& ctx, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n,
                   int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb, float beta, TC* C, int64_t ldc) {
  const float alpha = 1.0f;
  const cublasStatus_t s = cublasGemmEx(ctx.cublas, op_a, op_b, int(m), int(n), int(k), &alpha, A, data_type<T>(),
                                        int(lda), B, data_type<T>(), int(ldb), &beta, C, data_type<TC>(), int(ldc),
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return s == CUBLAS_STATUS_SUCCESS ? Status::kOk : Status::kDeviceError;
}

}  // namespace

Status make_grouped_gemm_context(GroupedGemmContext* ctx) {
  if (!ctx) return Status::kInvalidArgument;
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return Status::kDeviceError;
  ctx->cublas = h;
  return Status::kOk;
}

void destroy_grouped_gemm_context(GroupedGemmContext* ctx) {
  if (!ctx || !ctx->cublas) return;
  cublasDestroy(ctx->cublas);
  ctx->cublas = nullptr;
}

template <typename T>
Status grouped_gemm(const GroupedGemmContext& ctx, T* Y, const T* X, const T* W, const int64_t* offsets, int64_t E,
                    int64_t N_out, int64_t K, cudaStream_t stream) {
  if (Status s = check_grouped(ctx, offsets, E, N_out, K); s != Status::kOk) return s;
  if (offsets[E] > offsets[0] && (!Y || !X || !W)) return Status::kInvalidArgument;
  if (cublasSetStream(ctx.cublas, stream) != CUBLAS_STATUS_SUCCESS) return Status::kDeviceError;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
    if (rows == 0) continue;
    // Y_e^T (N_out x rows) = W_e (col-major K x N_out, transposed) * X_e^T (col-major K x rows).
    if (Status s = cublas_gemm(ctx, CUBLAS_OP_T, CUBLAS_OP_N, N_out, rows, K, W + e * N_out * K, K, X + r0 * K, K, 0.0f,
                               Y + r0 * N_out, N_out);
        s != Status::kOk)
      return s;
  }
  return Status::kOk;
}

template <typename T>
Status grouped_gemm_dx(const GroupedGemmContext& ctx, T* dX, const T* dY, const T* W, const int64_t* offsets, int64_t E,
                       int64_t N_out, int64_t K, cudaStream_t stream) {
  if (Status s = check_grouped(ctx, offsets, E, N_out, K); s != Status::kOk) return s;
  if (offsets[E] > offsets[0] && (!dX || !dY || !W)) return Status::kInvalidArgument;
  if (cublasSetStream(ctx.cublas, stream) != CUBLAS_STATUS_SUCCESS) return Status::kDeviceError;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
    if (rows == 0) continue;
    // dX_e^T (K x rows) = W_e^T (col-major K x N_out) * dY_e^T (col-major N_out x rows).
    if (Status s = cublas_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_N, K, rows, N_out, W + e * N_out * K, K, dY + r0 * N_out,
                               N_out, 0.0f, dX + r0 * K, K);
        s != Status::kOk)
      return s;
  }
  return Status::kOk;
}

template <typename T>
Status grouped_gemm_dw(const GroupedGemmContext& ctx, float* dW, const T* dY, const T* X, const int64_t* offsets,
                       int64_t E, int64_t N_out, int64_t K, cudaStream_t stream) {
  if (Status s = check_grouped(ctx, offsets, E, N_out, K); s != Status::kOk) return s;
  if (offsets[E] > offsets[0] && (!dW || !dY || !X)) return Status::kInvalidArgument;
  if (cublasSetStream(ctx.cublas, stream) != CUBLAS_STATUS_SUCCESS) return Status::kDeviceError;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
    if (rows == 0) continue;
    // dW_e^T (K x N_out) += X_e^T (col-major K x rows) * dY_e (col-major N_out x rows, transposed).
    if (Status s = cublas_gemm(ctx, CUBLAS_OP_N, CUBLAS_OP_T, K, N_out, rows, X + r0 * K, K, dY + r0 * N_out, N_out,
                               1.0f, dW + e * N_out * K, K);
        s != Status::kOk)
      return s;
  }
  return Status::kOk;
}

#define CASTOR_GROUPED_GEMM_INSTANTIATE(T)                                                                             \
  template Status grouped_gemm<T>(const GroupedGemmContext&, T*, const T*, const T*, const int64_t*, int64_t, int64_t, \
                                  int64_t, cudaStream_t);                                                              \
  template Status grouped_gemm_dx<T>(const GroupedGemmContext&, T*, const T*, const T*, const int64_t*, int64_t,       \
                                     int64_t, int64_t, cudaStream_t);                                                  \
  template Status grouped_gemm_dw<T>(const GroupedGemmContext&, float*, const T*, const T*, const int64_t*, int64_t,   \
                                     int64_t, int64_t, cudaStream_t);
CASTOR_GROUPED_GEMM_INSTANTIATE(float)
CASTOR_GROUPED_GEMM_INSTANTIATE(bf16)
CASTOR_GROUPED_GEMM_INSTANTIATE(f16)
#undef CASTOR_GROUPED_GEMM_INSTANTIATE

}  // namespace castor::kernels::cuda
