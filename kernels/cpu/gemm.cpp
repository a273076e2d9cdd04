// Row-major fp32 GEMM through OpenBLAS's cblas_sgemm, with argument checks at the
// boundary (negative sizes, short leading dimensions, null pointers) and the thread-count
// switch shared by OpenBLAS and castor's own OpenMP regions. K == 0 is handled here
// (C = beta * C) so that no degenerate call reaches the BLAS.
#include "kernels/cpu/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <limits>

namespace castor::kernels::cpu {

namespace {

bool fits_blasint(int64_t v) { return v <= int64_t(std::numeric_limits<blasint>::max()); }

}  // namespace

Status gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc) {
  if (M < 0 || N < 0 || K < 0) return Status::kInvalidArgument;
  // Stored shapes: A is (M, K), or (K, M) when transposed; B is (K, N), or (N, K).
  const int64_t a_cols = trans_a ? M : K;
  const int64_t b_cols = trans_b ? K : N;
  if (lda < std::max<int64_t>(1, a_cols) || ldb < std::max<int64_t>(1, b_cols) ||
      ldc < std::max<int64_t>(1, N)) {
    return Status::kInvalidArgument;
  }
  if (M == 0 || N == 0) return Status::kOk;
  if (C == nullptr) return Status::kInvalidArgument;
  if (K > 0 && (A == nullptr || B == nullptr)) return Status::kInvalidArgument;
  if (!fits_blasint(M) || !fits_blasint(N) || !fits_blasint(K) || !fits_blasint(lda) ||
      !fits_blasint(ldb) || !fits_blasint(ldc)) {
    return Status::kNotSupported;
  }
  if (K == 0) {
    // op(A) @ op(B) is the zero matrix; BLAS convention: beta == 0 overwrites (no NaN).
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (beta == 0.0f) {
        std::fill(c, c + N, 0.0f);
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
      }
    }
    return Status::kOk;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, blasint(M), blasint(N), blasint(K), alpha, A,
              blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
  return Status::kOk;
}

void set_num_threads(int threads) {
  threads = std::max(1, threads);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace castor::kernels::cpu
