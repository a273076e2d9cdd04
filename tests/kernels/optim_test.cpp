// kernels/cpu/optim: AdamW against a naive scalar implementation in double over several
// steps (bias correction, decoupled weight decay, grad_scale), and sum_squares against a
// double loop and bitwise across thread counts; argument validation.
#include "kernels/cpu/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::random_vector;

class AdamWSizes : public ::testing::TestWithParam<int64_t> {};

TEST_P(AdamWSizes, MatchesNaiveScalarOverSteps) {
  const int64_t n = GetParam();
  auto w = random_vector(size_t(n), 1);
  std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  std::vector<double> rw(w.begin(), w.end()), rm(size_t(n), 0.0), rv(size_t(n), 0.0);
  AdamWHyper h{};
  h.lr = 1e-2f;
  h.beta1 = 0.9f;
  h.beta2 = 0.95f;
  h.eps = 1e-8f;
  h.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 5; ++step) {
    auto g = random_vector(size_t(n), 100 + uint64_t(step), 0.5f);
    h.step = step;
    h.grad_scale = step % 2 ? 0.5f : 1.0f;
    ASSERT_EQ(adamw_step(w.data(), g.data(), m.data(), v.data(), n, h), Status::kOk);
    const double b1 = h.beta1, b2 = h.beta2;
    for (int64_t i = 0; i < n; ++i) {
      const double gi = double(g[i]) * h.grad_scale;
      rm[i] = b1 * rm[i] + (1 - b1) * gi;
      rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
      const double mhat = rm[i] / (1 - std::pow(b1, double(step)));
      const double vhat = rv[i] / (1 - std::pow(b2, double(step)));
      rw[i] -= double(h.lr) * (mhat / (std::sqrt(vhat) + h.eps) + double(h.weight_decay) * rw[i]);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(m[i], rm[i], 1e-6 * (1 + std::fabs(rm[i]))) << i;
    ASSERT_NEAR(v[i], rv[i], 1e-6 * (1 + std::fabs(rv[i]))) << i;
    ASSERT_NEAR(w[i], rw[i], 2e-6 * (1 + std::fabs(rw[i]))) << i;
  }
}

// 19: serial; 70001: above the threading threshold.
INSTANTIATE_TEST_SUITE_P(Sizes, AdamWSizes, ::testing::Values(int64_t{19}, int64_t{70001}));

TEST(AdamW, FirstStepMovesByLearningRate) {
  // Step 1 with no decay: mhat / sqrt(vhat) = sign(g), so w moves by exactly ~lr.
  std::vector<float> w = {1.0f, -2.0f, 0.5f}, g = {3.0f, -0.25f, 1e-3f};
  std::vector<float> m(3, 0.0f), v(3, 0.0f);
  AdamWHyper h{0.1f, 0.9f, 0.999f, 1e-12f, 0.0f, 1, 1.0f};
  ASSERT_EQ(adamw_step(w.data(), g.data(), m.data(), v.data(), 3, h), Status::kOk);
  EXPECT_NEAR(w[0], 0.9f, 1e-6);
  EXPECT_NEAR(w[1], -1.9f, 1e-6);
  EXPECT_NEAR(w[2], 0.4f, 1e-5);
}

TEST(AdamW, RejectsBadArguments) {
  std::vector<float> b(4, 0.0f);
  AdamWHyper h{1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 1.0f};
  EXPECT_EQ(adamw_step(b.data(), b.data(), b.data(), b.data(), 4, h), Status::kInvalidArgument);
  h.step = 1;
  EXPECT_EQ(adamw_step(b.data(), nullptr, b.data(), b.data(), 4, h), Status::kInvalidArgument);
  EXPECT_EQ(adamw_step(b.data(), b.data(), b.data(), b.data(), -1, h), Status::kInvalidArgument);
  h.beta1 = 1.0f;
  EXPECT_EQ(adamw_step(b.data(), b.data(), b.data(), b.data(), 4, h), Status::kInvalidArgument);
}

TEST(SumSquares, MatchesDoubleLoop) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{33}, int64_t{5000}, int64_t{1234567}}) {
    auto g = random_vector(size_t(n), 7, 3.0f);
    double want = 0.0;
    for (float x : g) want += double(x) * double(x);
    double got = -1.0;
    ASSERT_EQ(sum_squares(&got, g.data(), n), Status::kOk);
    EXPECT_NEAR(got, want, 1e-12 * want) << "n = " << n;
  }
}

TEST(SumSquares, BitwiseEqualForOneAndTwoThreads) {
  const int before = num_threads();
  for (int64_t n : {int64_t{100000}, int64_t{1048583}}) {
    auto g = random_vector(size_t(n), 8);
    double got[2] = {0.0, 0.0};
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      ASSERT_EQ(sum_squares(&got[threads - 1], g.data(), n), Status::kOk);
    }
    EXPECT_EQ(got[0], got[1]) << "n = " << n;
  }
  set_num_threads(before);
}

TEST(SumSquares, RejectsBadArguments) {
  float g[2] = {1.0f, 2.0f};
  double out = 0.0;
  EXPECT_EQ(sum_squares(nullptr, g, 2), Status::kInvalidArgument);
  EXPECT_EQ(sum_squares(&out, nullptr, 2), Status::kInvalidArgument);
  EXPECT_EQ(sum_squares(&out, g, -1), Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
