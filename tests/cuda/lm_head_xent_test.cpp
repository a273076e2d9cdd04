// CUDA fused LM head + cross-entropy against cpu::lm_head_xent on the same rounded inputs:
// loss sum, count, per-row losses, dx (=) and the increment of dw (+=, pre-filled) with
// ignored targets, row_scale, chunks smaller than N (not dividing it), vocabularies that are
// and are not multiples of 4, forward only, all rows ignored, N = 0, out-of-range targets
// (NaN loss), and argument checks. Tolerances: loss 1e-5 relative (fp32 logits from the same
// inputs); dx/dw tolerance<T>() (bf16, f16: dlogits are rounded to T before the GEMMs).
#include "kernels/cuda/lm_head_xent.cuh"

#include <cmath>
#include <string>

#include "kernels/cpu/lm_head_xent.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

namespace kc = kernels::cuda;
using kernels::Status;

class Context {
 public:
  Context() : workspace_(size_t(8) << 20) {
    EXPECT_EQ(kc::make_gemm_context(&ctx_, workspace_.get(), workspace_.size()), Status::kOk);
  }
  ~Context() { EXPECT_EQ(kc::destroy_gemm_context(&ctx_), Status::kOk); }
  const kc::GemmContext& get() const { return ctx_; }

 private:
  DeviceArray<unsigned char> workspace_;
  kc::GemmContext ctx_;
};

struct Case {
  int64_t N, C, V, chunk;
  bool backward = true, row_scale = true, row_losses = true;
  std::string str() const {
    return "N=" + std::to_string(N) + " C=" + std::to_string(C) + " V=" + std::to_string(V) +
           " chunk=" + std::to_string(chunk) + (backward ? "" : " forward-only") + (row_scale ? " row_scale" : "") +
           (row_losses ? " row_losses" : "");
  }
};

// Targets in [0, V) with every 5th row (from row 2) ignored.
std::vector<int32_t> make_targets(int64_t N, int64_t V, uint64_t seed) {
  std::vector<int32_t> t = random_ints(size_t(N), seed, 0, int32_t(V - 1));
  for (int64_t i = 2; i < N; i += 5) t[size_t(i)] = -1;
  return t;
}

std::vector<float> as_floats(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = float(double(a[i]) - double(b[i]));
  return d;
}

// Outputs of one run on the device, downloaded.
struct GpuRun {
  Status status;
  kc::XentDeviceResult result;
  std::vector<float> dx, dw;
  std::vector<double> row_losses;
};

template <typename T>
GpuRun run_gpu(const kc::GemmContext& ctx, const Case& k, const std::vector<float>& x, const std::vector<float>& w,
               const std::vector<int32_t>& targets, float grad_scale, const std::vector<float>& dw0,
               const std::vector<float>& row_scale) {
  DeviceArray<T> x_d(x), w_d(w), dxo(size_t(k.N * k.C));
  DeviceArray<float> dw_d(dw0), scale_d(row_scale);
  DeviceArray<int32_t> targets_d(targets);
  DeviceArray<double> losses_d(size_t(k.N));
  DeviceArray<kc::XentDeviceResult> result_d(1);
  DeviceArray<unsigned char> scratch(kc::lm_head_xent_scratch_bytes(k.chunk, k.V, sizeof(T)));
  dxo.poison();
  losses_d.poison();
  result_d.poison();
  scratch.poison();
  GpuRun run;
  run.status =
      kc::lm_head_xent<T>(ctx, result_d.get(), x_d.get(), w_d.get(), targets_d.get(), k.N, k.C, k.V, grad_scale,
                          k.backward ? dxo.get() : nullptr, k.backward ? dw_d.get() : nullptr, scratch.get(), k.chunk,
                          k.row_scale ? scale_d.get() : nullptr, k.row_losses ? losses_d.get() : nullptr, nullptr);
  run.result = result_d.download()[0];
  run.dx = dxo.download();
  run.dw = dw_d.download();
  run.row_losses = losses_d.download();
  return run;
}

template <typename T>
void check_case(const kc::GemmContext& ctx, const Case& k, uint64_t seed) {
  SCOPED_TRACE(k.str());
  const std::vector<float> x = rounded<T>(random_floats(size_t(k.N * k.C), seed));
  const std::vector<float> w = rounded<T>(random_floats(size_t(k.V * k.C), seed + 1, -0.5f, 0.5f));
  const std::vector<int32_t> targets = make_targets(k.N, k.V, seed + 2);
  const std::vector<float> row_scale = random_floats(size_t(k.N), seed + 3, 0.25f, 2.0f);
  const std::vector<float> dw0 = random_floats(size_t(k.V * k.C), seed + 4);
  const float grad_scale = 0.37f;

  const GpuRun gpu = run_gpu<T>(ctx, k, x, w, targets, grad_scale, dw0, row_scale);
  ASSERT_EQ(gpu.status, Status::kOk);

  std::vector<float> dx(size_t(k.N * k.C)), dw = dw0;
  std::vector<float> scratch(kernels::cpu::lm_head_xent_scratch_floats(k.chunk, k.V));
  std::vector<double> row_losses(size_t(k.N));
  kernels::cpu::XentResult want;
  ASSERT_EQ(
      kernels::cpu::lm_head_xent(&want, x.data(), w.data(), targets.data(), k.N, k.C, k.V, grad_scale,
                                 k.backward ? dx.data() : nullptr, k.backward ? dw.data() : nullptr, scratch.data(),
                                 k.chunk, k.row_scale ? row_scale.data() : nullptr, row_losses.data()),
      Status::kOk);

  EXPECT_EQ(gpu.result.count, want.count);
  EXPECT_NEAR(gpu.result.loss_sum, want.loss_sum, 1e-5 * std::abs(want.loss_sum) + 1e-9);
  if (k.row_losses) {
    EXPECT_LT(rel_error(as_floats(gpu.row_losses), as_floats(row_losses)), 1e-5);
  }
  if (k.backward) {
    EXPECT_LT(rel_error(gpu.dx, dx), tolerance<T>());
    EXPECT_LT(rel_error(minus(gpu.dw, dw0), minus(dw, dw0)), tolerance<T>());  // the increment
  } else {
    EXPECT_EQ(gpu.dw, dw0) << "forward only touched dw";
  }
}

template <typename T>
class CudaLmHeadXent : public ::testing::Test {};
TYPED_TEST_SUITE(CudaLmHeadXent, StorageTypes);

TYPED_TEST(CudaLmHeadXent, MatchesCpu) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  const Case cases[] = {
      {37, 40, 301, 16},                       // V odd (scalar row path), chunk not dividing N
      {37, 33, 512, 16},                       // V % 4 == 0 (float4 path), C odd (misaligned chunks)
      {1, 24, 64, 8},                          // N = 1
      {50, 64, 1000, 64, true, false, false},  // one chunk larger than N, no row_scale / row_losses
      {37, 40, 301, 10, false, true, true},    // forward only
      {700, 32, 260, 600},                     // chunk above the reduction's 512 threads
  };
  uint64_t i = 0;
  for (const Case& k : cases) check_case<T>(ctx.get(), k, seed + 10 * i++);
  expect_device_clean();
}

TYPED_TEST(CudaLmHeadXent, AllIgnoredAndEmpty) {
  using T = TypeParam;
  Context ctx;
  const Case k{9, 16, 40, 4};
  const std::vector<float> x = rounded<T>(random_floats(size_t(k.N * k.C), 1));
  const std::vector<float> w = rounded<T>(random_floats(size_t(k.V * k.C), 2));
  const std::vector<float> dw0 = random_floats(size_t(k.V * k.C), 3), ones(size_t(k.N), 1.0f);
  const GpuRun all = run_gpu<T>(ctx.get(), k, x, w, std::vector<int32_t>(size_t(k.N), -1), 1.0f, dw0, ones);
  ASSERT_EQ(all.status, Status::kOk);
  EXPECT_EQ(all.result.count, 0);
  EXPECT_EQ(all.result.loss_sum, 0.0);
  EXPECT_EQ(all.dx, std::vector<float>(size_t(k.N * k.C), 0.0f));
  EXPECT_EQ(all.dw, dw0);
  EXPECT_EQ(all.row_losses, std::vector<double>(size_t(k.N), 0.0));

  // N = 0: nothing is read (null inputs and scratch are fine) and the result is zeroed.
  DeviceArray<kc::XentDeviceResult> result_d(1);
  result_d.poison();
  ASSERT_EQ(kc::lm_head_xent<T>(ctx.get(), result_d.get(), nullptr, nullptr, nullptr, 0, k.C, k.V, 1.0f, nullptr,
                                nullptr, nullptr, k.chunk, nullptr, nullptr, nullptr),
            Status::kOk);
  const kc::XentDeviceResult none = result_d.download()[0];
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.loss_sum, 0.0);
  expect_device_clean();
}

TYPED_TEST(CudaLmHeadXent, OutOfRangeTargetGivesNanLoss) {
  using T = TypeParam;
  Context ctx;
  const Case k{6, 16, 40, 4};
  const std::vector<float> x = rounded<T>(random_floats(size_t(k.N * k.C), 1));
  const std::vector<float> w = rounded<T>(random_floats(size_t(k.V * k.C), 2));
  const std::vector<float> dw0(size_t(k.V * k.C), 0.0f), ones(size_t(k.N), 1.0f);
  for (int32_t bad : {int32_t(k.V), int32_t(-2)}) {
    std::vector<int32_t> targets(size_t(k.N), 3);
    targets[4] = bad;
    const GpuRun run = run_gpu<T>(ctx.get(), k, x, w, targets, 1.0f, dw0, ones);
    ASSERT_EQ(run.status, Status::kOk);
    EXPECT_TRUE(std::isnan(run.result.loss_sum)) << "target " << bad;
    EXPECT_TRUE(std::isnan(run.row_losses[4]));
  }
  expect_device_clean();
}

TEST(CudaLmHeadXentArgs, RejectsBadArguments) {
  Context ctx;
  const kc::GemmContext& c = ctx.get();
  DeviceArray<float> buf(std::vector<float>(256, 0.0f));
  DeviceArray<int32_t> t(std::vector<int32_t>(4, 0));
  DeviceArray<kc::XentDeviceResult> r(1);
  float* p = buf.get();
  auto call = [&](kc::XentDeviceResult* res, int64_t N, int64_t C, int64_t V, float* dx, float* dw, void* scratch,
                  int64_t chunk, const kc::GemmContext& context) {
    return kc::lm_head_xent<float>(context, res, p, p, t.get(), N, C, V, 1.0f, dx, dw, scratch, chunk, nullptr, nullptr,
                                   nullptr);
  };
  EXPECT_EQ(call(nullptr, 4, 4, 4, p, p, p, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), -1, 4, 4, p, p, p, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 0, 4, p, p, p, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 4, 0, p, p, p, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 4, 4, p, p, p, 0, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 4, 4, p, nullptr, p, 2, c), Status::kInvalidArgument);  // dx without dw
  EXPECT_EQ(call(r.get(), 4, 4, 4, p, p, nullptr, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 4, 4, p, p, p + 1, 2, c), Status::kInvalidArgument);  // scratch misaligned
  EXPECT_EQ(call(r.get(), 4, int64_t(1) << 31, 4, p, p, p, 2, c), Status::kInvalidArgument);
  EXPECT_EQ(call(r.get(), 4, 4, 4, p, p, p, 2, kc::GemmContext{}), Status::kInvalidArgument);
  EXPECT_EQ(kc::lm_head_xent_scratch_bytes(0, 4, 4), 0u);
  EXPECT_EQ(kc::lm_head_xent_scratch_bytes(4, 4, 3), 0u);
  EXPECT_GT(kc::lm_head_xent_scratch_bytes(4, 4, 2), kc::lm_head_xent_scratch_bytes(4, 4, 4));
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
