// kernels/cpu/norm: LayerNorm and RMSNorm forward against a double reference, backward
// against finite differences w.r.t. x, w and b, = into dx versus += into dw/db, and
// bitwise equality of the parameter gradients for 1 and 2 threads.
#include "kernels/cpu/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

constexpr float kEps = 1e-5f;

TEST(LayerNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 5, C = 45;
  auto x = random_vector(size_t(N * C), 1, 3.0f);
  for (auto& v : x) v += 10.0f;  // a large mean must not hurt the variance
  auto w = random_vector(size_t(C), 2);
  auto b = random_vector(size_t(C), 3);
  std::vector<float> y(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
  ASSERT_EQ(layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                              N, C, kEps),
            Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    double mu = 0.0, var = 0.0;
    for (int64_t c = 0; c < C; ++c) mu += x[n * C + c];
    mu /= double(C);
    for (int64_t c = 0; c < C; ++c) var += (x[n * C + c] - mu) * (x[n * C + c] - mu);
    var /= double(C);
    const double r = 1.0 / std::sqrt(var + kEps);
    EXPECT_NEAR(mean[n], mu, 1e-5 * std::fabs(mu));
    EXPECT_NEAR(rstd[n], r, 1e-5 * r);
    for (int64_t c = 0; c < C; ++c) {
      const double want = (x[n * C + c] - mu) * r * w[c] + b[c];
      EXPECT_NEAR(y[n * C + c], want, 2e-5 * (1.0 + std::fabs(want))) << n << "," << c;
    }
  }
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 4, C = 40;  // C spans two column blocks
  auto x = random_vector(size_t(N * C), 4);
  auto w = random_vector(size_t(C), 5);
  auto b = random_vector(size_t(C), 6);
  auto r = random_vector(size_t(N * C), 7);
  auto loss = [&] {
    std::vector<float> y(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
    EXPECT_EQ(layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                                N, C, kEps),
              Status::kOk);
    return probe(y, r);
  };
  std::vector<float> y(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
  ASSERT_EQ(layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                              N, C, kEps),
            Status::kOk);
  std::vector<float> dx(x.size(), 123.0f), dw(w.size(), 0.0f), db(b.size(), 0.0f);
  ASSERT_EQ(layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(),
                               mean.data(), rstd.data(), N, C),
            Status::kOk);
  expect_gradient_matches(x, dx, loss, "dx", 40);
  expect_gradient_matches(w, dw, loss, "dw", 40);
  expect_gradient_matches(b, db, loss, "db", 40);

  // A second backward adds the same dw, db again and overwrites dx with the same values.
  auto dx1 = dx, dw1 = dw, db1 = db;
  ASSERT_EQ(layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(),
                               mean.data(), rstd.data(), N, C),
            Status::kOk);
  EXPECT_EQ(dx, dx1);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_FLOAT_EQ(dw[c], 2.0f * dw1[c]);
    EXPECT_FLOAT_EQ(db[c], 2.0f * db1[c]);
  }
}

TEST(RmsNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 3, C = 50;
  auto x = random_vector(size_t(N * C), 8, 2.0f);
  auto w = random_vector(size_t(C), 9);
  std::vector<float> y(x.size()), rstd(static_cast<size_t>(N));
  ASSERT_EQ(rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, kEps), Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0.0;
    for (int64_t c = 0; c < C; ++c) ms += double(x[n * C + c]) * x[n * C + c];
    const double r = 1.0 / std::sqrt(ms / double(C) + kEps);
    EXPECT_NEAR(rstd[n], r, 1e-5 * r);
    for (int64_t c = 0; c < C; ++c) {
      const double want = x[n * C + c] * r * w[c];
      EXPECT_NEAR(y[n * C + c], want, 2e-5 * (1.0 + std::fabs(want)));
    }
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 4, C = 40;
  auto x = random_vector(size_t(N * C), 10);
  auto w = random_vector(size_t(C), 11);
  auto r = random_vector(size_t(N * C), 12);
  auto loss = [&] {
    std::vector<float> y(x.size()), rstd(static_cast<size_t>(N));
    EXPECT_EQ(rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, kEps),
              Status::kOk);
    return probe(y, r);
  };
  std::vector<float> y(x.size()), rstd(static_cast<size_t>(N));
  ASSERT_EQ(rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, kEps), Status::kOk);
  std::vector<float> dx(x.size(), -5.0f), dw(w.size(), 0.0f);
  ASSERT_EQ(rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N,
                             C),
            Status::kOk);
  expect_gradient_matches(x, dx, loss, "dx", 40);
  expect_gradient_matches(w, dw, loss, "dw", 40);
}

TEST(Norm, ParameterGradientsAreBitwiseIndependentOfThreads) {
  const int64_t N = 512, C = 100;  // above the threading threshold
  auto x = random_vector(size_t(N * C), 13);
  auto w = random_vector(size_t(C), 14);
  auto b = random_vector(size_t(C), 15);
  auto dy = random_vector(size_t(N * C), 16);
  std::vector<float> y(x.size()), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
  ASSERT_EQ(layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                              N, C, kEps),
            Status::kOk);
  std::vector<float> rrstd(static_cast<size_t>(N));
  ASSERT_EQ(rmsnorm_forward(y.data(), rrstd.data(), x.data(), w.data(), N, C, kEps), Status::kOk);
  const int before = num_threads();
  std::vector<std::vector<float>> grads[4];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<float> dx(x.size()), dw(w.size(), 0.5f), db(b.size(), 0.25f);
    ASSERT_EQ(layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(),
                                 mean.data(), rstd.data(), N, C),
              Status::kOk);
    grads[0].push_back(dw);
    grads[1].push_back(db);
    std::vector<float> rdx(x.size()), rdw(w.size(), 0.5f);
    ASSERT_EQ(rmsnorm_backward(rdx.data(), rdw.data(), dy.data(), x.data(), w.data(),
                               rrstd.data(), N, C),
              Status::kOk);
    grads[2].push_back(rdw);
    grads[3].push_back(dx);
  }
  set_num_threads(before);
  EXPECT_EQ(grads[0][0], grads[0][1]) << "layernorm dw";
  EXPECT_EQ(grads[1][0], grads[1][1]) << "layernorm db";
  EXPECT_EQ(grads[2][0], grads[2][1]) << "rmsnorm dw";
  EXPECT_EQ(grads[3][0], grads[3][1]) << "layernorm dx";
}

TEST(Norm, RejectsBadArguments) {
  float buf[8] = {};
  EXPECT_EQ(layernorm_forward(buf, buf, buf, buf, buf, buf, 2, 0, kEps), Status::kInvalidArgument);
  EXPECT_EQ(layernorm_forward(buf, buf, buf, buf, nullptr, buf, 2, 2, kEps),
            Status::kInvalidArgument);
  EXPECT_EQ(rmsnorm_forward(buf, buf, buf, buf, -1, 2, kEps), Status::kInvalidArgument);
  EXPECT_EQ(rmsnorm_backward(buf, nullptr, buf, buf, buf, buf, 2, 2), Status::kInvalidArgument);
  EXPECT_EQ(layernorm_backward(nullptr, buf, buf, buf, buf, buf, buf, buf, 2, 2),
            Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
