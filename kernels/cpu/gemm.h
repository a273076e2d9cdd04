// Dense fp32 matrix multiply through OpenBLAS (cblas), row-major.
// C = alpha * op(A) @ op(B) + beta * C with op(X) = X or X^T; M x N result, K inner.
// lda/ldb/ldc are the row strides of A, B, C as stored. Linear layers use
// y = x W^T (trans_b), dx = dy W, dW += dy^T x (trans_a, beta = 1).
// beta = 0 overwrites C (NaN/garbage in C is ignored); K = 0 gives C = beta * C.
// kInvalidArgument: negative size, leading dimension shorter than a stored row, or a null
// pointer for a non-empty operand; kNotSupported: a size beyond the BLAS integer range.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

Status gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc);

// Sets the thread count OpenBLAS and our OpenMP regions use (process-wide pools);
// values below 1 mean 1. num_threads() reports the OpenMP count.
void set_num_threads(int threads);
int num_threads();

}  // namespace castor::kernels::cpu
