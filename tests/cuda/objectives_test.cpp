// CUDA auxiliary objectives against the CPU kernels (kernels/cpu/objectives.h) on fresh
// random inputs, for T = float, bf16 and f16: segment_mean and its accumulating backward (more
// than 256 overlapping ranges, unvalidated invalid ranges), InfoNCE (argmax ties, a clamped
// zero row, forward only), mse_rows, kl_distill (masked rows, identical rows give exactly 0),
// and the argument checks. Losses are compared in double; gradients by relative L2 error.
#include "kernels/cuda/objectives.cuh"

#include <algorithm>
#include <string>

#include "kernels/cpu/objectives.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace gpu = kernels::cuda;
namespace cpu = kernels::cpu;

// Losses: inputs are identical (rounded through T) and both sides compute in fp32/fp64, so
// only summation order separates them; relative, absolute below 1 (a zero KL stays ~0).
constexpr double kLossTol = 1e-5;
// InfoNCE gradients in fp32: logits scaled by 1/T (up to 14 here) amplify the rounding of S.
template <typename T>
constexpr double info_nce_grad_tolerance() {
  return std::is_same_v<T, float> ? 1e-4 : tolerance<T>();
}

double rel_diff(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1.0); }

// n random non-empty ranges inside [0, rows).
void random_ranges(int64_t rows, int64_t n, uint64_t seed, std::vector<int32_t>* begin, std::vector<int32_t>* end) {
  std::mt19937_64 gen(seed);
  begin->resize(size_t(n));
  end->resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = std::uniform_int_distribution<int32_t>(0, int32_t(rows) - 1)(gen);
    (*begin)[size_t(i)] = b;
    (*end)[size_t(i)] = std::uniform_int_distribution<int32_t>(b + 1, int32_t(rows))(gen);
  }
}

template <typename T>
class CudaObjectives : public ::testing::Test {};
TYPED_TEST_SUITE(CudaObjectives, StorageTypes);

// ---- segment_mean ----

struct SegmentShape {
  int64_t rows, C, n;
};

TYPED_TEST(CudaObjectives, SegmentMeanMatchesCpu) {
  using T = TypeParam;
  for (const SegmentShape s : {SegmentShape{1, 1, 1}, SegmentShape{37, 300, 9}, SegmentShape{200, 513, 40}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(s.rows) + " C " + std::to_string(s.C));
    const std::vector<float> x = rounded<T>(random_floats(size_t(s.rows * s.C), seed));
    std::vector<int32_t> b, e;
    random_ranges(s.rows, s.n, seed + 1, &b, &e);
    std::vector<float> want(size_t(s.n * s.C));
    ASSERT_EQ(cpu::segment_mean(want.data(), x.data(), s.rows, s.C, b.data(), e.data(), s.n), Status::kOk);
    DeviceArray<T> dx(x), dout(want.size());
    DeviceArray<int32_t> db(b), de(e);
    for (const bool host_copies : {true, false}) {
      dout.poison();
      ASSERT_EQ(gpu::segment_mean(dout.get(), dx.get(), s.rows, s.C, db.get(), de.get(), s.n,
                                  host_copies ? b.data() : nullptr, host_copies ? e.data() : nullptr, nullptr),
                Status::kOk);
      EXPECT_LT(rel_error(dout.download(), want), tolerance<T>());
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaObjectives, SegmentMeanBackwardAccumulatesLikeCpu) {
  using T = TypeParam;
  // 300 ranges over 50 rows: every row in many ranges, two ballot chunks of 256 ranges.
  for (const SegmentShape s : {SegmentShape{1, 1, 1}, SegmentShape{50, 300, 300}, SegmentShape{129, 70, 5}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(s.rows) + " n " + std::to_string(s.n));
    const std::vector<float> dout = rounded<T>(random_floats(size_t(s.n * s.C), seed));
    std::vector<float> dx = rounded<T>(random_floats(size_t(s.rows * s.C), seed + 1));  // accumulated into
    std::vector<int32_t> b, e;
    random_ranges(s.rows, s.n, seed + 2, &b, &e);
    DeviceArray<T> ddx(dx), ddout(dout);
    DeviceArray<int32_t> db(b), de(e);
    ASSERT_EQ(gpu::segment_mean_backward(ddx.get(), ddout.get(), s.rows, s.C, db.get(), de.get(), s.n, b.data(),
                                         e.data(), nullptr),
              Status::kOk);
    ASSERT_EQ(cpu::segment_mean_backward(dx.data(), dout.data(), s.rows, s.C, b.data(), e.data(), s.n), Status::kOk);
    EXPECT_LT(rel_error(ddx.download(), dx), tolerance<T>());
  }
  expect_device_clean();
}

// Ranges that skip host validation and are invalid never touch memory out of bounds: the
// forward writes NaN for them, the backward ignores them.
TYPED_TEST(CudaObjectives, SegmentMeanUnvalidatedInvalidRanges) {
  using T = TypeParam;
  const int64_t rows = 6, C = 5, n = 4;
  const std::vector<int32_t> b = {0, 3, -2, 4}, e = {2, 3, 1, 9};  // ok, empty, negative, too far
  const std::vector<float> x = rounded<T>(random_floats(size_t(rows * C), fresh_seed()));
  DeviceArray<T> dx(x), dout(size_t(n * C));
  DeviceArray<int32_t> db(b), de(e);
  ASSERT_EQ(gpu::segment_mean(dout.get(), dx.get(), rows, C, db.get(), de.get(), n, nullptr, nullptr, nullptr),
            Status::kOk);
  const std::vector<float> out = dout.download();
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(out[size_t(c)], 0.5f * (x[size_t(c)] + x[size_t(C + c)]), 1e-2);
    for (int64_t i = 1; i < n; ++i) EXPECT_TRUE(std::isnan(out[size_t(i * C + c)])) << i;
  }
  const std::vector<float> g(size_t(n * C), 1.0f);
  DeviceArray<T> dg(g), dgrad(std::vector<float>(size_t(rows * C), 0.0f));
  ASSERT_EQ(
      gpu::segment_mean_backward(dgrad.get(), dg.get(), rows, C, db.get(), de.get(), n, nullptr, nullptr, nullptr),
      Status::kOk);
  const std::vector<float> grad = dgrad.download();
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(grad[size_t(r * C)], r < 2 ? 0.5f : 0.0f) << r;
  expect_device_clean();
}

TEST(CudaObjectivesArgs, SegmentMeanRejectsBadArguments) {
  DeviceArray<float> x(std::vector<float>(12, 1.0f)), out(4);
  const std::vector<int32_t> b_ok = {0}, e_ok = {3}, e_empty = {0}, b_neg = {-1}, e_big = {4};
  DeviceArray<int32_t> db(b_ok), de(e_ok);
  auto run = [&](const std::vector<int32_t>& bh, const std::vector<int32_t>& eh) {
    return gpu::segment_mean(out.get(), x.get(), 3, 4, db.get(), de.get(), 1, bh.data(), eh.data(), nullptr);
  };
  EXPECT_EQ(run(b_ok, e_ok), Status::kOk);
  EXPECT_EQ(run(b_ok, e_empty), Status::kInvalidArgument);
  EXPECT_EQ(run(b_neg, e_ok), Status::kOutOfRange);
  EXPECT_EQ(run(b_ok, e_big), Status::kOutOfRange);
  EXPECT_EQ(gpu::segment_mean(out.get(), x.get(), 3, 4, db.get(), de.get(), 1, b_ok.data(), nullptr, nullptr),
            Status::kInvalidArgument);  // one host copy without the other
  EXPECT_EQ(gpu::segment_mean(out.get(), x.get(), 3, 0, db.get(), de.get(), 1, nullptr, nullptr, nullptr),
            Status::kInvalidArgument);  // C = 0
  EXPECT_EQ(gpu::segment_mean<float>(out.get(), nullptr, 3, 4, db.get(), de.get(), 1, nullptr, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(
      gpu::segment_mean_backward(out.get(), x.get(), 3, 4, db.get(), de.get(), 1, b_neg.data(), e_ok.data(), nullptr),
      Status::kOutOfRange);
  EXPECT_EQ(gpu::segment_mean_backward(out.get(), x.get(), -1, 4, db.get(), de.get(), 1, nullptr, nullptr, nullptr),
            Status::kInvalidArgument);
  expect_device_clean();
}

// ---- info_nce ----

struct InfoNceShape {
  int64_t P, D;
  bool zero_row;  // a's row 1 all zeros: its norm is clamped
};

TYPED_TEST(CudaObjectives, InfoNceMatchesCpu) {
  using T = TypeParam;
  // D = 1: every logit is +-1/T, so argmax ties everywhere (to the lower index).
  for (const InfoNceShape s : {InfoNceShape{2, 1, false}, InfoNceShape{37, 70, false}, InfoNceShape{300, 40, false},
                               InfoNceShape{20, 16, true}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " P " + std::to_string(s.P) + " D " + std::to_string(s.D));
    const size_t pd = size_t(s.P * s.D);
    std::vector<float> a = random_floats(pd, seed), noise = random_floats(pd, seed + 1);
    std::vector<float> b(pd);
    for (size_t i = 0; i < pd; ++i) b[i] = a[i] + noise[i];  // about half the pairs match
    if (s.zero_row) std::fill(a.begin() + s.D, a.begin() + 2 * s.D, 0.0f);
    a = rounded<T>(a);
    b = rounded<T>(b);
    const float temperature = 0.07f, grad_scale = 0.75f;

    std::vector<float> cpu_scratch(cpu::info_nce_scratch_floats(s.P, s.D)), da(pd), db(pd);
    double loss = 0.0;
    int64_t ab = -1, ba = -1;
    ASSERT_EQ(cpu::info_nce(a.data(), b.data(), s.P, s.D, temperature, &loss, &ab, &ba, grad_scale, da.data(),
                            db.data(), cpu_scratch.data(), cpu_scratch.size()),
              Status::kOk);

    const size_t scratch_floats = gpu::info_nce_scratch_floats(s.P, s.D);
    DeviceArray<float> scratch(scratch_floats);
    DeviceArray<T> d_a(a), d_b(b), d_da(pd), d_db(pd);
    DeviceArray<double> d_loss(1);
    DeviceArray<int64_t> d_ab(1), d_ba(1);
    d_da.poison();
    d_db.poison();
    d_loss.poison();
    d_ab.poison();
    d_ba.poison();
    ASSERT_EQ(gpu::info_nce(d_a.get(), d_b.get(), s.P, s.D, temperature, d_loss.get(), d_ab.get(), d_ba.get(),
                            grad_scale, d_da.get(), d_db.get(), scratch.get(), scratch_floats, nullptr),
              Status::kOk);
    EXPECT_LT(rel_diff(d_loss.download()[0], loss), kLossTol) << d_loss.download()[0] << " vs " << loss;
    EXPECT_EQ(d_ab.download()[0], ab);
    EXPECT_EQ(d_ba.download()[0], ba);
    // A clamped zero row's gradient is g / 1e-12 (~1e10): past f16's range (65504), inf there.
    if (!(std::is_same_v<T, f16> && s.zero_row)) {
      EXPECT_LT(rel_error(d_da.download(), da), info_nce_grad_tolerance<T>());
    }
    EXPECT_LT(rel_error(d_db.download(), db), info_nce_grad_tolerance<T>());

    // Forward only, without counts: same loss, gradients untouched.
    d_loss.poison();
    ASSERT_EQ(gpu::info_nce<T>(d_a.get(), d_b.get(), s.P, s.D, temperature, d_loss.get(), nullptr, nullptr, grad_scale,
                               nullptr, nullptr, scratch.get(), scratch_floats, nullptr),
              Status::kOk);
    EXPECT_LT(rel_diff(d_loss.download()[0], loss), kLossTol);
  }
  expect_device_clean();
}

TEST(CudaObjectivesArgs, InfoNceRejectsBadArguments) {
  const int64_t P = 4, D = 3;
  const size_t need = gpu::info_nce_scratch_floats(P, D);
  DeviceArray<float> a(std::vector<float>(size_t(P * D), 1.0f)), g(size_t(P * D)), scratch(need + 2);
  DeviceArray<double> loss(1);
  auto run = [&](int64_t p, float t, float* da, float* db, float* s, size_t floats) {
    return gpu::info_nce<float>(a.get(), a.get(), p, D, t, loss.get(), nullptr, nullptr, 1.0f, da, db, s, floats,
                                nullptr);
  };
  EXPECT_EQ(run(P, 0.1f, g.get(), g.get(), scratch.get(), need), Status::kOk);
  EXPECT_EQ(run(1, 0.1f, nullptr, nullptr, scratch.get(), need), Status::kInvalidArgument);  // P < 2
  EXPECT_EQ(run(P, 0.0f, nullptr, nullptr, scratch.get(), need), Status::kInvalidArgument);
  EXPECT_EQ(run(P, INFINITY, nullptr, nullptr, scratch.get(), need), Status::kInvalidArgument);
  EXPECT_EQ(run(P, 0.1f, g.get(), nullptr, scratch.get(), need), Status::kInvalidArgument);  // one of da/db
  EXPECT_EQ(run(P, 0.1f, nullptr, nullptr, scratch.get(), need - 1), Status::kInvalidArgument);
  EXPECT_EQ(run(P, 0.1f, nullptr, nullptr, scratch.get() + 1, need), Status::kInvalidArgument);  // misaligned
  EXPECT_EQ(run(P, 0.1f, nullptr, nullptr, nullptr, need), Status::kInvalidArgument);
  expect_device_clean();
}

// ---- mse_rows ----

TYPED_TEST(CudaObjectives, MseRowsMatchesCpu) {
  using T = TypeParam;
  for (const auto& [n, D] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 77}, {1031, 300}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " D " + std::to_string(D));
    const std::vector<float> pred = rounded<T>(random_floats(size_t(n * D), seed));
    const std::vector<float> target = rounded<T>(random_floats(size_t(n * D), seed + 1));
    std::vector<float> dpred(pred.size());
    double loss = 0.0;
    ASSERT_EQ(cpu::mse_rows(pred.data(), target.data(), n, D, &loss, 0.5f, dpred.data()), Status::kOk);
    const size_t bytes = gpu::mse_rows_scratch_bytes(n);
    DeviceArray<double> scratch(bytes / sizeof(double));
    DeviceArray<T> d_pred(pred), d_target(target), d_dpred(pred.size());
    DeviceArray<double> d_loss(1);
    d_dpred.poison();
    d_loss.poison();
    ASSERT_EQ(gpu::mse_rows(d_pred.get(), d_target.get(), n, D, d_loss.get(), 0.5f, d_dpred.get(), scratch.get(), bytes,
                            nullptr),
              Status::kOk);
    EXPECT_LT(rel_diff(d_loss.download()[0], loss), kLossTol);
    EXPECT_LT(rel_error(d_dpred.download(), dpred), tolerance<T>());
    d_loss.poison();
    ASSERT_EQ(gpu::mse_rows<T>(d_pred.get(), d_target.get(), n, D, d_loss.get(), 0.5f, nullptr, scratch.get(), bytes,
                               nullptr),
              Status::kOk);
    EXPECT_LT(rel_diff(d_loss.download()[0], loss), kLossTol);
  }
  expect_device_clean();
}

TEST(CudaObjectivesArgs, MseRowsEdgesAndBadArguments) {
  DeviceArray<double> loss(1), scratch(4);
  DeviceArray<float> x(std::vector<float>(8, 1.0f));
  loss.poison();
  ASSERT_EQ(gpu::mse_rows<float>(nullptr, nullptr, 0, 3, loss.get(), 1.0f, nullptr, nullptr, 0, nullptr), Status::kOk);
  EXPECT_EQ(loss.download()[0], 0.0);  // no rows: 0
  EXPECT_EQ(gpu::mse_rows<float>(x.get(), x.get(), 2, 4, nullptr, 1.0f, nullptr, scratch.get(), 32, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::mse_rows<float>(x.get(), x.get(), 2, 0, loss.get(), 1.0f, nullptr, scratch.get(), 32, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::mse_rows<float>(x.get(), x.get(), 2, 4, loss.get(), 1.0f, nullptr, scratch.get(), 8, nullptr),
            Status::kInvalidArgument);  // scratch for one row only
  EXPECT_EQ(gpu::mse_rows<float>(x.get(), x.get(), 2, 4, loss.get(), 1.0f, nullptr, nullptr, 32, nullptr),
            Status::kInvalidArgument);
  expect_device_clean();
}

// ---- kl_distill ----

TYPED_TEST(CudaObjectives, KlDistillMatchesCpu) {
  using T = TypeParam;
  for (const auto& [n, V] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {13, 1000}, {4, 50257}}) {
    for (const bool masked : {false, true}) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " V " + std::to_string(V) +
                   (masked ? " masked" : ""));
      const std::vector<float> s = rounded<T>(random_floats(size_t(n * V), seed, -4.0f, 4.0f));
      const std::vector<float> t = rounded<T>(random_floats(size_t(n * V), seed + 1, -4.0f, 4.0f));
      std::vector<int32_t> mask = random_ints(size_t(n), seed + 2, -1, 3);
      mask[0] = 0;  // at least one row used
      const int32_t* mask_host = masked ? mask.data() : nullptr;
      const float temperature = 2.0f, grad_scale = 0.3f;
      std::vector<float> ds(s.size());
      double loss = 0.0;
      int64_t count = -1;
      ASSERT_EQ(cpu::kl_distill(s.data(), t.data(), mask_host, n, V, temperature, &loss, &count, grad_scale, ds.data()),
                Status::kOk);
      const size_t bytes = gpu::kl_distill_scratch_bytes(n);
      DeviceArray<double> scratch(bytes / sizeof(double)), d_loss(1);
      DeviceArray<T> d_s(s), d_t(t), d_ds(s.size());
      DeviceArray<int32_t> d_mask(mask);
      DeviceArray<int64_t> d_count(1);
      d_ds.poison();
      d_loss.poison();
      d_count.poison();
      ASSERT_EQ(gpu::kl_distill(d_s.get(), d_t.get(), masked ? d_mask.get() : nullptr, n, V, temperature, d_loss.get(),
                                d_count.get(), grad_scale, d_ds.get(), scratch.get(), bytes, nullptr),
                Status::kOk);
      EXPECT_LT(rel_diff(d_loss.download()[0], loss), kLossTol) << d_loss.download()[0] << " vs " << loss;
      EXPECT_EQ(d_count.download()[0], count);
      EXPECT_LT(stored_rel_error<T>(d_ds.download(), ds), tolerance<T>());  // f16: most of ds at V = 50257 is subnormal
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaObjectives, KlDistillIdenticalRowsGiveExactZero) {
  using T = TypeParam;
  const int64_t n = 3, V = 1000;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<float> z = rounded<T>(random_floats(size_t(n * V), seed, -8.0f, 8.0f));
  const size_t bytes = gpu::kl_distill_scratch_bytes(n);
  DeviceArray<double> scratch(bytes / sizeof(double)), d_loss(1);
  DeviceArray<T> d_s(z), d_t(z), d_ds(z.size());
  DeviceArray<int64_t> d_count(1);
  d_ds.poison();
  ASSERT_EQ(gpu::kl_distill(d_s.get(), d_t.get(), nullptr, n, V, 1.5f, d_loss.get(), d_count.get(), 1.0f, d_ds.get(),
                            scratch.get(), bytes, nullptr),
            Status::kOk);
  EXPECT_EQ(d_loss.download()[0], 0.0);
  EXPECT_EQ(d_count.download()[0], n);
  for (const float g : d_ds.download()) ASSERT_EQ(g, 0.0f);
  expect_device_clean();
}

TEST(CudaObjectivesArgs, KlDistillEdgesAndBadArguments) {
  DeviceArray<double> loss(1), scratch(2);
  DeviceArray<int64_t> count(1);
  DeviceArray<float> x(std::vector<float>(8, 1.0f));
  loss.poison();
  count.poison();
  ASSERT_EQ(gpu::kl_distill<float>(nullptr, nullptr, nullptr, 0, 4, 1.0f, loss.get(), count.get(), 1.0f, nullptr,
                                   nullptr, 0, nullptr),
            Status::kOk);
  EXPECT_EQ(loss.download()[0], 0.0);
  EXPECT_EQ(count.download()[0], 0);
  auto run = [&](int64_t V, float t, int64_t* c, void* s, size_t bytes) {
    return gpu::kl_distill<float>(x.get(), x.get(), nullptr, 2, V, t, loss.get(), c, 1.0f, nullptr, s, bytes, nullptr);
  };
  EXPECT_EQ(run(4, 1.0f, count.get(), scratch.get(), 16), Status::kOk);
  EXPECT_EQ(run(0, 1.0f, count.get(), scratch.get(), 16), Status::kInvalidArgument);
  EXPECT_EQ(run(4, NAN, count.get(), scratch.get(), 16), Status::kInvalidArgument);
  EXPECT_EQ(run(4, -1.0f, count.get(), scratch.get(), 16), Status::kInvalidArgument);
  EXPECT_EQ(run(4, 1.0f, nullptr, scratch.get(), 16), Status::kInvalidArgument);
  EXPECT_EQ(run(4, 1.0f, count.get(), nullptr, 16), Status::kInvalidArgument);
  EXPECT_EQ(run(4, 1.0f, count.get(), scratch.get(), 8), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
