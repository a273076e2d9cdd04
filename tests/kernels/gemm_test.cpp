// kernels/cpu/gemm: every transpose combination against a naive triple loop in double,
// with padded leading dimensions (padding must stay untouched), the beta == 0 and K == 0
// conventions, argument validation and the thread-count switch.
#include "kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::random_vector;

struct Case {
  bool ta, tb;
};

// C = alpha op(A) op(B) + beta C on stored row-major matrices, in double.
std::vector<double> naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const std::vector<float>& A, int64_t lda, const std::vector<float>& B,
                          int64_t ldb, float beta, const std::vector<float>& C, int64_t ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + i] : A[i * lda + k];
        const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
      }
      out[i * ldc + j] = double(alpha) * s + double(beta) * double(C[i * ldc + j]);
    }
  }
  return out;
}

class GemmTest : public ::testing::TestWithParam<Case> {};

TEST_P(GemmTest, MatchesNaiveWithPaddedStrides) {
  const auto [ta, tb] = GetParam();
  const int64_t M = 13, N = 11, K = 17;
  const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
  const int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
  auto A = random_vector(size_t(a_rows * lda), 1);
  auto B = random_vector(size_t(b_rows * ldb), 2);
  auto C = random_vector(size_t(M * ldc), 3);
  const float alpha = 0.75f, beta = -0.5f;
  auto want = naive(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  ASSERT_EQ(gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc),
            Status::kOk);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = size_t(i * ldc + j);
      if (j < N) {
        EXPECT_NEAR(C[at], want[at], 1e-4 * (1.0 + std::fabs(want[at]))) << i << "," << j;
      } else {
        EXPECT_EQ(C[at], float(want[at])) << "padding of C changed at " << i << "," << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, GemmTest,
                         ::testing::Values(Case{false, false}, Case{false, true},
                                           Case{true, false}, Case{true, true}),
                         [](const auto& info) {
                           return std::string(info.param.ta ? "T" : "N") +
                                  (info.param.tb ? "T" : "N");
                         });

TEST(Gemm, BetaZeroOverwritesGarbage) {
  const int64_t M = 4, N = 5, K = 3;
  auto A = random_vector(size_t(M * K), 4);
  auto B = random_vector(size_t(N * K), 5);
  std::vector<float> C(size_t(M * N), std::numeric_limits<float>::quiet_NaN());
  ASSERT_EQ(gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N),
            Status::kOk);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(A[i * K + k]) * double(B[j * K + k]);
      EXPECT_NEAR(C[i * N + j], s, 1e-5);
    }
  }
}

TEST(Gemm, EmptyInnerDimensionScalesC) {
  std::vector<float> C = {1.0f, -2.0f, 3.0f, 4.0f};
  ASSERT_EQ(gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2),
            Status::kOk);
  EXPECT_EQ(C, (std::vector<float>{0.5f, -1.0f, 1.5f, 2.0f}));
  C.assign(4, std::numeric_limits<float>::quiet_NaN());
  ASSERT_EQ(gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2),
            Status::kOk);
  EXPECT_EQ(C, std::vector<float>(4, 0.0f));
}

TEST(Gemm, RejectsBadArguments) {
  std::vector<float> A(64, 1.0f), B(64, 1.0f), C(64, 0.0f);
  const float* a = A.data();
  const float* b = B.data();
  float* c = C.data();
  EXPECT_EQ(gemm(false, false, -1, 2, 2, 1, a, 2, b, 2, 0, c, 2), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, -1, 2, 1, a, 2, b, 2, 0, c, 2), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, 2, -1, 1, a, 2, b, 2, 0, c, 2), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, 2, 2, 1, nullptr, 2, b, 2, 0, c, 2), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, 2, 2, 1, a, 2, nullptr, 2, 0, c, 2), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, nullptr, 2), Status::kInvalidArgument);
  // Leading dimensions shorter than the stored rows.
  EXPECT_EQ(gemm(false, false, 2, 3, 4, 1, a, 3, b, 3, 0, c, 3), Status::kInvalidArgument);
  EXPECT_EQ(gemm(true, false, 2, 3, 4, 1, a, 1, b, 3, 0, c, 3), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, true, 2, 3, 4, 1, a, 4, b, 3, 0, c, 3), Status::kInvalidArgument);
  EXPECT_EQ(gemm(false, false, 2, 3, 4, 1, a, 4, b, 3, 0, c, 2), Status::kInvalidArgument);
  // Empty results need no pointers.
  EXPECT_EQ(gemm(false, false, 0, 3, 4, 1, nullptr, 4, nullptr, 3, 0, nullptr, 3), Status::kOk);
}

TEST(Gemm, ThreadCountRoundTrips) {
  const int before = num_threads();
  set_num_threads(2);
  EXPECT_EQ(num_threads(), 2);
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  set_num_threads(before);
}

TEST(Gemm, LargeProductMatchesNaiveWithTwoThreads) {
  // Large enough that OpenBLAS splits the work.
  const int64_t M = 96, N = 80, K = 128;
  auto A = random_vector(size_t(M * K), 6);
  auto B = random_vector(size_t(N * K), 7);
  std::vector<float> C(size_t(M * N), 0.0f);
  const int before = num_threads();
  set_num_threads(2);
  ASSERT_EQ(gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N),
            Status::kOk);
  set_num_threads(before);
  auto want = naive(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
  for (size_t i = 0; i < C.size(); ++i) EXPECT_NEAR(C[i], want[i], 1e-4 * (1 + std::fabs(want[i])));
}

}  // namespace
}  // namespace castor::kernels::cpu
