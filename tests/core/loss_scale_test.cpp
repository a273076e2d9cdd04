// LossScaler on the cpu backend: unscaling divides every gradient and detects inf and NaN;
// overflows halve the scale (never below 1), a window of clean steps doubles it (never above
// 2^24); disabled, the scale is 1 and gradients are untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/backend.h"
#include "core/loss_scale.h"

namespace castor {
namespace {

TEST(LossScaler, UnscalesAndDetectsOverflow) {
  auto backend = make_cpu_backend(1);
  LossScaler s(true, 1024.0f, 3);
  std::vector<float> g = {1024.0f, -512.0f, 3.0f};
  EXPECT_TRUE(s.unscale(backend->ops(), g.data(), 3));
  EXPECT_EQ(g, (std::vector<float>{1.0f, -0.5f, 3.0f / 1024.0f}));
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    std::vector<float> h = {1.0f, bad, 2.0f};
    EXPECT_FALSE(s.unscale(backend->ops(), h.data(), 3)) << bad;
  }
}

TEST(LossScaler, HalvesOnOverflowAndGrowsAfterAWindow) {
  LossScaler s(true, 8.0f, 3);
  s.update(false);
  EXPECT_EQ(s.scale(), 4.0f);
  EXPECT_EQ(s.overflows(), 1);
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 4.0f);  // two clean steps: not yet
  s.update(false);             // an overflow restarts the window
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 2.0f);
  s.update(true);
  EXPECT_EQ(s.scale(), 4.0f);  // three clean steps in a row
  for (int i = 0; i < 10; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 1.0f);  // floor
  LossScaler top(true, 16777216.0f, 1);
  top.update(true);
  EXPECT_EQ(top.scale(), 16777216.0f);  // cap 2^24
}

TEST(LossScaler, DisabledIsANoOp) {
  auto backend = make_cpu_backend(1);
  LossScaler s(false, 65536.0f, 10);
  EXPECT_EQ(s.scale(), 1.0f);
  std::vector<float> g = {INFINITY, 2.0f};
  EXPECT_TRUE(s.unscale(backend->ops(), g.data(), 2));
  EXPECT_EQ(g[1], 2.0f);
  s.update(false);
  EXPECT_EQ(s.scale(), 1.0f);
}

TEST(LossScaler, RestoresACheckpointedState) {
  LossScaler a(true, 1024.0f, 4);
  a.update(true);
  a.update(true);
  LossScaler b(true, 65536.0f, 4);
  b.restore(a.scale(), a.clean_steps());
  a.update(true);
  a.update(true);
  b.update(true);
  b.update(true);
  EXPECT_EQ(b.scale(), 2048.0f);  // the window carried over: two more clean steps doubled it
  EXPECT_EQ(b.scale(), a.scale());
  EXPECT_THROW(b.restore(0.5f, 0), Error);
  EXPECT_THROW(b.restore(8.0f, 4), Error);  // a full window is not a state update() leaves
  LossScaler off(false, 1.0f, 1);
  EXPECT_THROW(off.restore(8.0f, 0), Error);
}

TEST(LossScaler, RejectsBadSettings) {
  EXPECT_THROW(LossScaler(true, 0.5f, 10), Error);
  EXPECT_THROW(LossScaler(true, 1024.0f, 0), Error);
}

}  // namespace
}  // namespace castor
