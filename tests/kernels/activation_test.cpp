// kernels/cpu/activation: GELU (tanh) and SwiGLU forward against double-precision
// formulas over a wide input range (the kernels use their own vectorised exp), including
// saturated inputs, and backward against finite differences.
#include "kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

const double kK = std::sqrt(2.0 / M_PI);

double gelu_arg_ref(double x) { return kK * (x + 0.044715 * x * x * x); }
double gelu_ref(double x) { return 0.5 * x * (1.0 + std::tanh(gelu_arg_ref(x))); }

// fp32 rounds the exponent z of e^z, so the relative error grows with |z|.
double tolerance(double want, double z) {
  return 1e-15 + std::fabs(want) * (4e-6 + 3e-7 * std::fabs(z));
}

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }

// Evenly spaced points on [lo, hi], plus the extremes a saturating kernel must survive.
std::vector<float> sweep(float lo, float hi, int count) {
  std::vector<float> v;
  for (int i = 0; i < count; ++i) v.push_back(lo + (hi - lo) * float(i) / float(count - 1));
  for (float e : {-1e4f, -200.0f, -90.0f, 0.0f, 1e-6f, -1e-6f, 90.0f, 200.0f, 1e4f}) v.push_back(e);
  return v;
}

TEST(Gelu, ForwardMatchesTanhFormula) {
  auto x = sweep(-12.0f, 12.0f, 40001);  // above the threading threshold
  std::vector<float> y(x.size());
  ASSERT_EQ(gelu_forward(y.data(), x.data(), int64_t(x.size())), Status::kOk);
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = gelu_ref(x[i]);
    ASSERT_NEAR(y[i], want, tolerance(want, 2.0 * gelu_arg_ref(x[i]))) << "x = " << x[i];
  }
}

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  auto x = random_vector(200, 1, 2.0f);
  auto r = random_vector(200, 2);
  auto loss = [&] {
    std::vector<float> y(x.size());
    EXPECT_EQ(gelu_forward(y.data(), x.data(), int64_t(x.size())), Status::kOk);
    return probe(y, r);
  };
  std::vector<float> dx(x.size());
  ASSERT_EQ(gelu_backward(dx.data(), r.data(), x.data(), int64_t(x.size())), Status::kOk);
  expect_gradient_matches(x, dx, loss, "gelu dx", 64, 1e-2f);
}

TEST(Gelu, BackwardMatchesAnalyticDerivativeEverywhere) {
  auto x = sweep(-12.0f, 12.0f, 2001);
  std::vector<float> ones(x.size(), 1.0f), dx(x.size());
  ASSERT_EQ(gelu_backward(dx.data(), ones.data(), x.data(), int64_t(x.size())), Status::kOk);
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double t = std::tanh(gelu_arg_ref(v));
    const double want =
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * kK * (1.0 + 3.0 * 0.044715 * v * v);
    ASSERT_NEAR(dx[i], want, 1e-6 + tolerance(want, 2.0 * gelu_arg_ref(v))) << "x = " << v;
  }
}

TEST(SwiGlu, ForwardMatchesFormula) {
  auto g = sweep(-30.0f, 30.0f, 3001);
  const int64_t F = int64_t(g.size()), N = 2;
  auto up = random_vector(size_t(N * F), 3);
  std::vector<float> in(size_t(N * 2 * F));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < F; ++j) {
      in[n * 2 * F + j] = n == 0 ? g[j] : -g[j];
      in[n * 2 * F + F + j] = up[n * F + j];
    }
  }
  std::vector<float> out(size_t(N * F));
  ASSERT_EQ(swiglu_forward(out.data(), in.data(), N, F), Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < F; ++j) {
      const double want = silu_ref(in[n * 2 * F + j]) * up[n * F + j];
      ASSERT_NEAR(out[n * F + j], want, tolerance(want, in[n * 2 * F + j]))
          << "gate = " << in[n * 2 * F + j];
    }
  }
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  const int64_t N = 5, F = 24;
  auto in = random_vector(size_t(N * 2 * F), 4, 2.0f);
  auto r = random_vector(size_t(N * F), 5);
  auto loss = [&] {
    std::vector<float> out(size_t(N * F));
    EXPECT_EQ(swiglu_forward(out.data(), in.data(), N, F), Status::kOk);
    return probe(out, r);
  };
  std::vector<float> din(in.size(), 77.0f);
  ASSERT_EQ(swiglu_backward(din.data(), r.data(), in.data(), N, F), Status::kOk);
  expect_gradient_matches(in, din, loss, "swiglu din", 80);
}

TEST(Activation, RejectsBadArguments) {
  float buf[4] = {};
  EXPECT_EQ(gelu_forward(buf, nullptr, 4), Status::kInvalidArgument);
  EXPECT_EQ(gelu_backward(buf, buf, buf, -1), Status::kInvalidArgument);
  EXPECT_EQ(swiglu_forward(nullptr, buf, 1, 2), Status::kInvalidArgument);
  EXPECT_EQ(swiglu_backward(buf, buf, buf, -1, 2), Status::kInvalidArgument);
  EXPECT_EQ(gelu_forward(nullptr, nullptr, 0), Status::kOk);
}

}  // namespace
}  // namespace castor::kernels::cpu
