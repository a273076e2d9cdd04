// CUDA optimizer kernels against kernels/cpu/optim.h on fresh random arena slices:
// sum_squares (awkward sizes, bitwise repeatable, n = 0), adamw_step_bf16copy (weights and
// moments as the CPU, the bf16 copy exactly the rounded fp32 weights), unscale_and_check
// (exact products, inf/NaN/overflow flagged, flag never cleared), and the argument checks.
// (adamw_step itself: adamw_test.cpp.)
#include "kernels/cuda/optim.cuh"

#include <string>

#include "kernels/cpu/optim.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace gpu = kernels::cuda;
namespace cpu = kernels::cpu;

// Both sides sum exact double products; only the order of the additions differs.
constexpr double kSumSquaresTol = 1e-12;

TEST(CudaSumSquares, MatchesCpuAndRepeatsBitwise) {
  for (const int64_t n : {int64_t(1), int64_t(255), int64_t(1025), int64_t(100003), int64_t(5000017)}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n));
    const std::vector<float> g = random_floats(size_t(n), seed, -3.0f, 3.0f);
    double want = 0.0;
    ASSERT_EQ(cpu::sum_squares(&want, g.data(), n), Status::kOk);
    const size_t bytes = gpu::sum_squares_scratch_bytes(n);
    ASSERT_GT(bytes, 0u);
    DeviceArray<double> scratch(bytes / sizeof(double)), out(2);
    DeviceArray<float> dg(g);
    out.poison();
    ASSERT_EQ(gpu::sum_squares(out.get(), dg.get(), n, scratch.get(), bytes, nullptr), Status::kOk);
    ASSERT_EQ(gpu::sum_squares(out.get() + 1, dg.get(), n, scratch.get(), bytes, nullptr), Status::kOk);
    const std::vector<double> got = out.download();
    EXPECT_LT(std::fabs(got[0] - want) / want, kSumSquaresTol) << got[0] << " vs " << want;
    EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0) << "not bitwise repeatable";
  }
  expect_device_clean();
}

TEST(CudaSumSquares, EmptyAndBadArguments) {
  DeviceArray<double> out(1), scratch(4);
  DeviceArray<float> g(std::vector<float>(8, 1.0f));
  out.poison();
  ASSERT_EQ(gpu::sum_squares(out.get(), nullptr, 0, nullptr, 0, nullptr), Status::kOk);
  EXPECT_EQ(out.download()[0], 0.0);
  const size_t bytes = gpu::sum_squares_scratch_bytes(8);
  EXPECT_EQ(gpu::sum_squares(out.get(), g.get(), 8, scratch.get(), bytes, nullptr), Status::kOk);
  EXPECT_EQ(out.download()[0], 8.0);
  EXPECT_EQ(gpu::sum_squares(nullptr, g.get(), 8, scratch.get(), bytes, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::sum_squares(out.get(), g.get(), -1, scratch.get(), bytes, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::sum_squares(out.get(), nullptr, 8, scratch.get(), bytes, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::sum_squares(out.get(), g.get(), 8, nullptr, bytes, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::sum_squares(out.get(), g.get(), 8, scratch.get(), bytes - 1, nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

TEST(CudaAdamWBf16Copy, MatchesCpuAndCopiesRoundedWeights) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 100003;  // not a multiple of the block size
  std::vector<float> w = random_floats(size_t(n), seed), m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  DeviceArray<float> dw(w), dm(m), dv(v);
  DeviceArray<bf16> dw16{size_t(n)};
  cpu::AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.7f};
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> g = random_floats(size_t(n), seed + uint64_t(step), -2.0f, 2.0f);
    DeviceArray<float> dg(g);
    h.step = step;
    dw16.poison();
    ASSERT_EQ(gpu::adamw_step_bf16copy(dw.get(), dg.get(), dm.get(), dv.get(), n, h, dw16.get(), nullptr), Status::kOk);
    ASSERT_EQ(cpu::adamw_step(w.data(), g.data(), m.data(), v.data(), n, h), Status::kOk);
  }
  const std::vector<float> got_w = dw.download(), got_w16 = dw16.download();
  EXPECT_LT(rel_error(got_w, w), 1e-6);
  EXPECT_LT(rel_error(dm.download(), m), 1e-6);
  EXPECT_LT(rel_error(dv.download(), v), 1e-6);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(got_w16[size_t(i)], to_host_float(to_storage<bf16>(got_w[size_t(i)]))) << i;
  }
  // Without the copy it is plain AdamW; bad hyper-parameters are rejected as on the CPU.
  const std::vector<float> g = random_floats(size_t(n), seed + 9, -2.0f, 2.0f);
  DeviceArray<float> dg(g);
  h.step = 4;
  ASSERT_EQ(gpu::adamw_step_bf16copy(dw.get(), dg.get(), dm.get(), dv.get(), n, h, nullptr, nullptr), Status::kOk);
  ASSERT_EQ(cpu::adamw_step(w.data(), g.data(), m.data(), v.data(), n, h), Status::kOk);
  EXPECT_LT(rel_error(dw.download(), w), 1e-6);
  cpu::AdamWHyper bad = h;
  bad.beta1 = 1.0f;
  EXPECT_EQ(gpu::adamw_step_bf16copy(dw.get(), dg.get(), dm.get(), dv.get(), n, bad, dw16.get(), nullptr),
            Status::kInvalidArgument);
  bad = h;
  bad.lr = NAN;
  EXPECT_EQ(gpu::adamw_step(dw.get(), dg.get(), dm.get(), dv.get(), n, bad, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::adamw_step_bf16copy(nullptr, dg.get(), dm.get(), dv.get(), n, h, dw16.get(), nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::adamw_step_bf16copy(nullptr, nullptr, nullptr, nullptr, 0, h, nullptr, nullptr), Status::kOk);
  expect_device_clean();
}

TEST(CudaUnscaleAndCheck, ScalesExactlyAndFlagsNonFinite) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 100003;
  const float inv_scale = 1.0f / 1024.0f;
  std::vector<float> g = random_floats(size_t(n), seed, -1e4f, 1e4f);
  DeviceArray<float> dg(g);
  DeviceArray<int32_t> flag(std::vector<int32_t>{0});
  ASSERT_EQ(gpu::unscale_and_check(dg.get(), n, inv_scale, flag.get(), nullptr), Status::kOk);
  std::vector<float> got = dg.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], g[size_t(i)] * inv_scale) << i;
  EXPECT_EQ(flag.download()[0], 0);

  // One inf at the very end, then one NaN in the middle: each flagged.
  for (const int64_t bad : {n - 1, n / 2}) {
    std::vector<float> h = g;
    h[size_t(bad)] = bad == n - 1 ? INFINITY : NAN;
    DeviceArray<float> dh(h);
    flag.upload(std::vector<int32_t>{0});
    ASSERT_EQ(gpu::unscale_and_check(dh.get(), n, inv_scale, flag.get(), nullptr), Status::kOk);
    EXPECT_EQ(flag.download()[0], 1) << bad;
    // A clean range afterwards leaves the flag set.
    ASSERT_EQ(gpu::unscale_and_check(dg.get(), n, 1.0f, flag.get(), nullptr), Status::kOk);
    EXPECT_EQ(flag.download()[0], 1);
  }
  // A finite value that overflows when scaled up is flagged too.
  DeviceArray<float> big(std::vector<float>{1.0f, 3e38f, 2.0f});
  flag.upload(std::vector<int32_t>{0});
  ASSERT_EQ(gpu::unscale_and_check(big.get(), 3, 2.0f, flag.get(), nullptr), Status::kOk);
  EXPECT_EQ(flag.download()[0], 1);
  expect_device_clean();
}

TEST(CudaUnscaleAndCheck, RejectsBadArguments) {
  DeviceArray<float> g(std::vector<float>(4, 1.0f));
  DeviceArray<int32_t> flag(std::vector<int32_t>{0});
  EXPECT_EQ(gpu::unscale_and_check(g.get(), 4, 0.5f, nullptr, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::unscale_and_check(g.get(), -1, 0.5f, flag.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::unscale_and_check(g.get(), 4, INFINITY, flag.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::unscale_and_check(nullptr, 4, 0.5f, flag.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::unscale_and_check(nullptr, 0, 0.5f, flag.get(), nullptr), Status::kOk);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
