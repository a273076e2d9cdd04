// Fused LM head + cross-entropy: loss, dx and dW against a naive double-precision
// reference over the full logits matrix, for chunk sizes that do and do not divide N;
// finite-difference checks of dx and dW with an ignored target; target validation.
#include "kernels/cpu/lm_head_xent.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::random_vector;

struct Problem {
  int64_t N, C, V;
  std::vector<float> x, w;
  std::vector<int32_t> targets;
};

Problem make_problem(int64_t N, int64_t C, int64_t V, uint64_t seed) {
  Problem p{N, C, V, random_vector(size_t(N * C), seed, 1.0f),
            random_vector(size_t(V * C), seed + 1, 0.5f), std::vector<int32_t>(size_t(N))};
  for (int64_t i = 0; i < N; ++i) p.targets[size_t(i)] = int32_t((i * 7919 + 3) % V);
  p.targets[0] = 0;
  p.targets[size_t(N - 1)] = int32_t(V - 1);
  for (int64_t i = 2; i < N; i += 5) p.targets[size_t(i)] = -1;  // ignored rows
  return p;
}

struct Reference {
  double loss_sum = 0.0;
  int64_t count = 0;
  std::vector<double> dx, dw;  // gradients of grad_scale * loss_sum
};

Reference naive(const Problem& p, double grad_scale) {
  Reference ref;
  ref.dx.assign(size_t(p.N * p.C), 0.0);
  ref.dw.assign(size_t(p.V * p.C), 0.0);
  std::vector<double> logits(size_t(p.V));
  for (int64_t i = 0; i < p.N; ++i) {
    const int32_t t = p.targets[size_t(i)];
    if (t < 0) continue;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < p.V; ++v) {
      double z = 0.0;
      for (int64_t c = 0; c < p.C; ++c)
        z += double(p.x[size_t(i * p.C + c)]) * double(p.w[size_t(v * p.C + c)]);
      logits[size_t(v)] = z;
      m = std::max(m, z);
    }
    double sum = 0.0;
    for (double z : logits) sum += std::exp(z - m);
    const double lse = m + std::log(sum);
    ref.loss_sum += lse - logits[size_t(t)];
    ref.count += 1;
    for (int64_t v = 0; v < p.V; ++v) {
      const double g = grad_scale * (std::exp(logits[size_t(v)] - lse) - (v == t ? 1.0 : 0.0));
      for (int64_t c = 0; c < p.C; ++c) {
        ref.dx[size_t(i * p.C + c)] += g * double(p.w[size_t(v * p.C + c)]);
        ref.dw[size_t(v * p.C + c)] += g * double(p.x[size_t(i * p.C + c)]);
      }
    }
  }
  return ref;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    ASSERT_LE(err, tol * (1.0 + std::fabs(want[i]))) << what << "[" << i << "]: got " << got[i]
                                                     << " want " << want[i];
  }
}

class XentChunks : public ::testing::TestWithParam<int64_t> {};

TEST_P(XentChunks, MatchesNaiveFullLogits) {
  const int64_t chunk = GetParam();
  const Problem p = make_problem(37, 24, 301, 5);
  const float grad_scale = 0.37f;
  const Reference ref = naive(p, grad_scale);

  std::vector<float> scratch(lm_head_xent_scratch_floats(chunk, p.V), std::nanf(""));
  std::vector<float> dx(size_t(p.N * p.C), std::nanf(""));  // must be overwritten
  const auto dw0 = random_vector(size_t(p.V * p.C), 9, 1.0f);
  std::vector<float> dw = dw0;  // must be accumulated into
  XentResult res;
  ASSERT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V,
                         grad_scale, dx.data(), dw.data(), scratch.data(), chunk),
            Status::kOk);
  EXPECT_EQ(res.count, ref.count);
  EXPECT_NEAR(res.loss_sum, ref.loss_sum, 1e-5 * std::fabs(ref.loss_sum));
  expect_close(dx, ref.dx, 1e-5, "dx");
  std::vector<double> dw_want(dw0.size());
  for (size_t i = 0; i < dw0.size(); ++i) dw_want[i] = double(dw0[i]) + ref.dw[i];
  expect_close(dw, dw_want, 1e-5, "dw");

  // Loss only: same loss, no gradient written.
  XentResult fwd;
  ASSERT_EQ(lm_head_xent(&fwd, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V,
                         grad_scale, nullptr, nullptr, scratch.data(), chunk),
            Status::kOk);
  EXPECT_EQ(fwd.loss_sum, res.loss_sum);
  EXPECT_EQ(fwd.count, res.count);
}

// 1, 8 and 10 do not divide N = 37; 37 and 64 cover one chunk (exact and oversized).
INSTANTIATE_TEST_SUITE_P(Chunks, XentChunks, ::testing::Values(1, 8, 10, 37, 64));

TEST(LmHeadXent, GradcheckDxDw) {
  Problem p = make_problem(6, 5, 11, 17);  // row 2 is ignored
  ASSERT_EQ(p.targets[2], -1);
  const int64_t chunk = 4;
  std::vector<float> scratch(lm_head_xent_scratch_floats(chunk, p.V));
  std::vector<float> dx(p.x.size()), dw(p.w.size(), 0.0f);
  XentResult res;
  ASSERT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                         dx.data(), dw.data(), scratch.data(), chunk),
            Status::kOk);
  auto loss = [&]() {
    XentResult r;
    EXPECT_EQ(lm_head_xent(&r, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                           nullptr, nullptr, scratch.data(), chunk),
              Status::kOk);
    return r.loss_sum;
  };
  expect_gradient_matches(p.x, dx, loss, "dx", 30);
  expect_gradient_matches(p.w, dw, loss, "dw", 55);
  for (int64_t c = 0; c < p.C; ++c) EXPECT_EQ(dx[size_t(2 * p.C + c)], 0.0f) << "ignored row";
}

TEST(LmHeadXent, DeterministicForFixedChunk) {
  const Problem p = make_problem(50, 16, 1000, 23);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(3);
  std::vector<float> scratch(lm_head_xent_scratch_floats(16, p.V));
  std::vector<float> dx1(p.x.size()), dw1(p.w.size(), 0.0f), dx2(p.x.size()),
      dw2(p.w.size(), 0.0f);
  XentResult r1, r2;
  ASSERT_EQ(lm_head_xent(&r1, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 0.5f,
                         dx1.data(), dw1.data(), scratch.data(), 16),
            Status::kOk);
  ASSERT_EQ(lm_head_xent(&r2, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 0.5f,
                         dx2.data(), dw2.data(), scratch.data(), 16),
            Status::kOk);
  omp_set_num_threads(saved);
  EXPECT_EQ(r1.loss_sum, r2.loss_sum);
  EXPECT_EQ(dx1, dx2);
  EXPECT_EQ(dw1, dw2);
}

// Per-row gradient weights (two loss terms in one pass) equal the sum of two runs, each with
// the other term's targets ignored; per-row losses add up to the total.
TEST(LmHeadXent, RowScaleAndRowLosses) {
  const Problem p = make_problem(23, 8, 57, 31);
  std::vector<float> row_scale(size_t(p.N));
  Problem a = p, b = p;
  for (int64_t i = 0; i < p.N; ++i) {
    const bool second = i % 3 == 0;
    row_scale[size_t(i)] = second ? 2.5f : 0.25f;
    (second ? a : b).targets[size_t(i)] = -1;
  }
  std::vector<float> scratch(lm_head_xent_scratch_floats(8, p.V));
  std::vector<float> dx(p.x.size()), dw(p.w.size(), 0.0f), dxa(p.x.size()), dwa(p.w.size(), 0.0f),
      dxb(p.x.size()), dwb(p.w.size(), 0.0f);
  std::vector<double> row_losses(size_t(p.N), -1.0);
  XentResult r, ra, rb;
  ASSERT_EQ(lm_head_xent(&r, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 0.5f, dx.data(), dw.data(),
                         scratch.data(), 8, row_scale.data(), row_losses.data()),
            Status::kOk);
  ASSERT_EQ(lm_head_xent(&ra, a.x.data(), a.w.data(), a.targets.data(), p.N, p.C, p.V, 0.5f * 0.25f, dxa.data(),
                         dwa.data(), scratch.data(), 8),
            Status::kOk);
  ASSERT_EQ(lm_head_xent(&rb, b.x.data(), b.w.data(), b.targets.data(), p.N, p.C, p.V, 0.5f * 2.5f, dxb.data(),
                         dwb.data(), scratch.data(), 8),
            Status::kOk);
  double sum = 0.0;
  for (int64_t i = 0; i < p.N; ++i) {
    sum += row_losses[size_t(i)];
    if (p.targets[size_t(i)] < 0) {
      EXPECT_EQ(row_losses[size_t(i)], 0.0);
    }
  }
  EXPECT_NEAR(sum, r.loss_sum, 1e-9 * r.loss_sum);
  EXPECT_NEAR(r.loss_sum, ra.loss_sum + rb.loss_sum, 1e-9 * r.loss_sum);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx[i], dxa[i] + dxb[i], 1e-6) << i;
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_NEAR(dw[i], dwa[i] + dwb[i], 1e-6) << i;
}

TEST(LmHeadXent, AllIgnoredGivesZero) {
  Problem p = make_problem(5, 4, 9, 29);
  for (auto& t : p.targets) t = -1;
  std::vector<float> scratch(lm_head_xent_scratch_floats(2, p.V));
  std::vector<float> dx(p.x.size(), 1.0f), dw(p.w.size(), 2.0f);
  XentResult res;
  ASSERT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                         dx.data(), dw.data(), scratch.data(), 2),
            Status::kOk);
  EXPECT_EQ(res.count, 0);
  EXPECT_EQ(res.loss_sum, 0.0);
  EXPECT_EQ(dx, std::vector<float>(p.x.size(), 0.0f));
  EXPECT_EQ(dw, std::vector<float>(p.w.size(), 2.0f));
}

TEST(LmHeadXent, RejectsBadTargetsBeforeWriting) {
  Problem p = make_problem(4, 3, 7, 31);
  std::vector<float> scratch(lm_head_xent_scratch_floats(2, p.V));
  std::vector<float> dx(p.x.size(), 1.0f), dw(p.w.size(), 2.0f);
  XentResult res;
  for (int32_t bad : {7, 100, -2}) {
    p.targets[3] = bad;
    EXPECT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                           dx.data(), dw.data(), scratch.data(), 2),
              Status::kOutOfRange)
        << bad;
  }
  EXPECT_EQ(dx, std::vector<float>(p.x.size(), 1.0f));
  EXPECT_EQ(dw, std::vector<float>(p.w.size(), 2.0f));
  p.targets[3] = 6;
  EXPECT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                         dx.data(), dw.data(), scratch.data(), 0),
            Status::kInvalidArgument);
  EXPECT_EQ(lm_head_xent(&res, p.x.data(), p.w.data(), p.targets.data(), p.N, p.C, p.V, 1.0f,
                         dx.data(), nullptr, scratch.data(), 2),
            Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
