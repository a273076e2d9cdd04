// Dense fp32 matrix multiply through OpenBLAS (cblas), row-major.
// C = alpha * op(A) @ op(B) + beta * C with op(X) = X or X^T; M x N result, K inner.
// lda/ldb/ldc are the row strides of A, B, C as stored. Linear layers use
// y = x W^T (trans_b), dx = dy W, dW += dy^T x (trans_a, beta = 1).
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

Status gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc);

// Sets the thread count OpenBLAS and our OpenMP regions use (process-wide pools).
void set_num_threads(int threads);
int num_threads();

}  // namespace castor::kernels::cpu
