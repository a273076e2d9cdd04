// CUDA AdamW and the CPU kernel on the same fresh random arena slice: weights and both
// moments after three steps with clipping scale and weight decay.
#include "kernels/cpu/optim.h"
#include "kernels/cuda/optim.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

TEST(CudaAdamW, MatchesCpuOverSteps) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 100003;  // not a multiple of the block size
  std::vector<float> w = random_floats(n, seed), m(n, 0.0f), v(n, 0.0f);
  DeviceArray<float> dw(w), dm(m), dv(v);
  kernels::cpu::AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0.7f};
  for (int step = 1; step <= 3; ++step) {
    const std::vector<float> g = random_floats(n, seed + step, -2.0f, 2.0f);
    DeviceArray<float> dg(g);
    h.step = step;
    ASSERT_EQ(kernels::cuda::adamw_step(dw.get(), dg.get(), dm.get(), dv.get(), n, h, nullptr), kernels::Status::kOk);
    ASSERT_EQ(kernels::cpu::adamw_step(w.data(), g.data(), m.data(), v.data(), n, h), kernels::Status::kOk);
  }
  EXPECT_LT(rel_error(dw.download(), w), 1e-6);
  EXPECT_LT(rel_error(dm.download(), m), 1e-6);
  EXPECT_LT(rel_error(dv.download(), v), 1e-6);
  expect_device_clean();
}

TEST(CudaAdamW, RejectsBadArguments) {
  kernels::cpu::AdamWHyper h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 0, 1.0f};  // step 0
  DeviceArray<float> a(std::vector<float>(4, 1.0f));
  EXPECT_EQ(kernels::cuda::adamw_step(a.get(), a.get(), a.get(), a.get(), 4, h, nullptr),
            kernels::Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::cuda_test
