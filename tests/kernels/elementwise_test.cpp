// kernels/cpu/elementwise: exact results of the point-wise kernels (serial and threaded
// sizes), = versus += semantics, the bias gradient as the finite-difference gradient of
// the bias add, its thread-count independence, and argument validation.
#include "kernels/cpu/elementwise.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/gemm.h"
#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

class ElementwiseSizes : public ::testing::TestWithParam<int64_t> {};

TEST_P(ElementwiseSizes, PointwiseKernelsAreExact) {
  const int64_t n = GetParam();
  auto a = random_vector(size_t(n), 1);
  auto b = random_vector(size_t(n), 2);
  std::vector<float> out(size_t(n), -7.0f);
  ASSERT_EQ(add(out.data(), a.data(), b.data(), n), Status::kOk);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;

  auto y = a;
  ASSERT_EQ(add_accumulate(y.data(), b.data(), n), Status::kOk);
  ASSERT_EQ(add_accumulate(y.data(), b.data(), n), Status::kOk);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], (a[i] + b[i]) + b[i]) << i;

  auto s = a;
  ASSERT_EQ(scale(s.data(), -1.5f, n), Status::kOk);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(s[i], a[i] * -1.5f) << i;
}

// 37: serial with a vector remainder; 100003: above the threading threshold.
INSTANTIATE_TEST_SUITE_P(Sizes, ElementwiseSizes, ::testing::Values(int64_t{37}, int64_t{100003}));

TEST(Elementwise, BiasAddRowsBroadcastsOverRows) {
  const int64_t N = 5, C = 7;
  auto y = random_vector(size_t(N * C), 3);
  auto bias = random_vector(size_t(C), 4);
  auto got = y;
  ASSERT_EQ(bias_add_rows(got.data(), bias.data(), N, C), Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(got[n * C + c], y[n * C + c] + bias[c]);
  }
}

TEST(Elementwise, BiasGradIsGradientOfBiasAdd) {
  const int64_t N = 6, C = 37;  // C spans two column blocks
  auto y0 = random_vector(size_t(N * C), 5);
  auto r = random_vector(size_t(N * C), 6);
  auto bias = random_vector(size_t(C), 7);
  auto loss = [&] {
    auto y = y0;
    EXPECT_EQ(bias_add_rows(y.data(), bias.data(), N, C), Status::kOk);
    return probe(y, r);
  };
  std::vector<float> dbias(size_t(C), 0.0f);
  ASSERT_EQ(bias_grad_accumulate(dbias.data(), r.data(), N, C), Status::kOk);
  expect_gradient_matches(bias, dbias, loss, "dbias", 37);
}

TEST(Elementwise, BiasGradAccumulatesAndIsThreadIndependent) {
  const int64_t N = 1000, C = 200;
  auto dy = random_vector(size_t(N * C), 8);
  auto start = random_vector(size_t(C), 9);
  const int before = num_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto db = start;
    ASSERT_EQ(bias_grad_accumulate(db.data(), dy.data(), N, C), Status::kOk);
    results.push_back(db);
  }
  set_num_threads(before);
  EXPECT_EQ(results[0], results[1]);
  for (int64_t c = 0; c < C; ++c) {
    double s = start[c];
    for (int64_t n = 0; n < N; ++n) s += dy[n * C + c];
    EXPECT_NEAR(results[0][c], s, 1e-4) << c;
  }
}

TEST(Elementwise, RejectsBadArguments) {
  float buf[4] = {};
  EXPECT_EQ(add(buf, buf, buf, -1), Status::kInvalidArgument);
  EXPECT_EQ(add(nullptr, buf, buf, 4), Status::kInvalidArgument);
  EXPECT_EQ(add_accumulate(buf, nullptr, 4), Status::kInvalidArgument);
  EXPECT_EQ(scale(nullptr, 2.0f, 4), Status::kInvalidArgument);
  EXPECT_EQ(bias_add_rows(buf, nullptr, 2, 2), Status::kInvalidArgument);
  EXPECT_EQ(bias_grad_accumulate(buf, buf, -2, 2), Status::kInvalidArgument);
  EXPECT_EQ(add(nullptr, nullptr, nullptr, 0), Status::kOk);
}

}  // namespace
}  // namespace castor::kernels::cpu
