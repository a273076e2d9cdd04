// kernels/cpu/rope: table values by hand, one rotation by hand, the rotate_half
// convention against a naive Hugging Face-style formula on strided fused rows (padding
// untouched), inverse(forward(x)) == x, and the inverse as the gradient of the forward.
#include "kernels/cpu/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

TEST(Rope, TableHoldsCosSinOfPositionTimesFrequency) {
  const int64_t T = 4, D = 8;
  std::vector<float> table(size_t(T * D));
  ASSERT_EQ(rope_table(table.data(), T, D, 10000.0f), Status::kOk);
  // t = 3, i = 1: angle 3 * 10000^(-2/8) = 0.3.
  EXPECT_NEAR(table[3 * D + 2], 0.955336489125606, 1e-7);
  EXPECT_NEAR(table[3 * D + 3], 0.2955202066613396, 1e-7);
  // t = 0 is the identity rotation.
  for (int64_t i = 0; i < D / 2; ++i) {
    EXPECT_EQ(table[2 * i], 1.0f);
    EXPECT_EQ(table[2 * i + 1], 0.0f);
  }
}

TEST(Rope, HandComputedRotation) {
  // D = 4, theta = 10000: frequencies (1, 0.01). At t = 1, (x0, x2) turns by 1 rad and
  // (x1, x3) by 0.01 rad: x0' = x0 cos - x2 sin, x2' = x2 cos + x0 sin.
  const int64_t T = 2, D = 4;
  std::vector<float> table(size_t(T * D));
  ASSERT_EQ(rope_table(table.data(), T, D, 10000.0f), Status::kOk);
  std::vector<float> x = {9, 9, 9, 9, 1, 2, 3, 4};  // row t = 0, then row t = 1
  ASSERT_EQ(rope_apply(x.data(), table.data(), 1, T, 1, D, D, false), Status::kOk);
  EXPECT_EQ(x[0], 9.0f);
  EXPECT_EQ(x[3], 9.0f);
  EXPECT_NEAR(x[4], -1.9841106485555495, 1e-6);
  EXPECT_NEAR(x[5], 1.959900667496664, 1e-6);
  EXPECT_NEAR(x[6], 2.4623779024123156, 1e-6);
  EXPECT_NEAR(x[7], 4.019799668334994, 1e-6);
}

TEST(Rope, MatchesRotateHalfFormulaOnStridedRows) {
  // Two heads of D inside rows of a fused buffer: 3 leading floats, 2 heads, padding.
  const int64_t B = 2, T = 5, H = 2, D = 16, offset = 3, stride = offset + H * D + 7;
  const float theta = 500.0f;
  std::vector<float> table(size_t(T * D));
  ASSERT_EQ(rope_table(table.data(), T, D, theta), Status::kOk);
  auto buf = random_vector(size_t(B * T * stride), 1);
  auto got = buf;
  ASSERT_EQ(rope_apply(got.data() + offset, table.data(), B, T, H, D, stride, false),
            Status::kOk);
  for (int64_t row = 0; row < B * T; ++row) {
    const int64_t t = row % T;
    for (int64_t j = 0; j < stride; ++j) {
      const size_t at = size_t(row * stride + j);
      if (j < offset || j >= offset + H * D) {
        EXPECT_EQ(got[at], buf[at]) << "outside the heads, row " << row << " col " << j;
        continue;
      }
      // q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q[D/2:], q[:D/2]),
      // cos/sin over D entries = cat(freqs, freqs).
      const int64_t h = (j - offset) / D, d = (j - offset) % D;
      const float* q = buf.data() + row * stride + offset + h * D;
      const double freq = double(t) * std::pow(double(theta), -2.0 * double(d % (D / 2)) / D);
      const double rot = d < D / 2 ? -double(q[d + D / 2]) : double(q[d - D / 2]);
      const double want = q[d] * std::cos(freq) + rot * std::sin(freq);
      EXPECT_NEAR(got[at], want, 1e-5) << "row " << row << " head " << h << " d " << d;
    }
  }
}

TEST(Rope, InverseUndoesForward) {
  const int64_t B = 3, T = 7, H = 3, D = 10;
  std::vector<float> table(size_t(T * D));
  ASSERT_EQ(rope_table(table.data(), T, D, 10000.0f), Status::kOk);
  auto x = random_vector(size_t(B * T * H * D), 2);
  auto y = x;
  ASSERT_EQ(rope_apply(y.data(), table.data(), B, T, H, D, H * D, false), Status::kOk);
  ASSERT_NE(y, x);
  ASSERT_EQ(rope_apply(y.data(), table.data(), B, T, H, D, H * D, true), Status::kOk);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-6) << i;
}

TEST(Rope, InverseIsGradientOfForward) {
  const int64_t B = 2, T = 3, H = 2, D = 6;
  std::vector<float> table(size_t(T * D));
  ASSERT_EQ(rope_table(table.data(), T, D, 10000.0f), Status::kOk);
  auto x = random_vector(size_t(B * T * H * D), 3);
  auto r = random_vector(x.size(), 4);
  auto loss = [&] {
    auto y = x;
    EXPECT_EQ(rope_apply(y.data(), table.data(), B, T, H, D, H * D, false), Status::kOk);
    return probe(y, r);
  };
  auto dx = r;
  ASSERT_EQ(rope_apply(dx.data(), table.data(), B, T, H, D, H * D, true), Status::kOk);
  expect_gradient_matches(x, dx, loss, "rope dx", 72);
}

TEST(Rope, RejectsBadArguments) {
  std::vector<float> table(16), x(16);
  EXPECT_EQ(rope_table(table.data(), 2, 3, 10000.0f), Status::kInvalidArgument);  // odd D
  EXPECT_EQ(rope_table(table.data(), 2, 4, 0.0f), Status::kInvalidArgument);
  EXPECT_EQ(rope_table(nullptr, 2, 4, 10000.0f), Status::kInvalidArgument);
  // row_stride shorter than the heads it must hold.
  EXPECT_EQ(rope_apply(x.data(), table.data(), 1, 2, 2, 4, 6, false), Status::kInvalidArgument);
  EXPECT_EQ(rope_apply(x.data(), nullptr, 1, 2, 2, 4, 8, false), Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
