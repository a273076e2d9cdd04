// CUDA GELU and SwiGLU, forward and backward, against kernels/cpu/activation on the same
// rounded inputs, for float, bf16 and f16: awkward sizes, misaligned pointers (the element
// path), inputs wide enough to reach the clamped exp (|x| up to 60), bad arguments.
#include "kernels/cpu/activation.h"

#include <algorithm>

#include "kernels/cuda/activation.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

std::vector<float> slice(const std::vector<float>& v, size_t off, size_t n) {
  return std::vector<float>(v.begin() + long(off), v.begin() + long(off + n));
}

// ||got - want|| / max(||want||, ||dy|| / 5): gelu'(x) crosses 0 near x = -0.75, where the
// two terms of the derivative (each ~0.2 |dy|) cancel, so a lone element's relative error is
// unbounded (n = 1 failed a 1e-5 relative bound in ~1e-4 of draws); dy sets the terms' scale.
double grad_error(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& dy) {
  double dy2 = 0.0, want2 = 0.0;
  for (float v : dy) dy2 += double(v) * double(v);
  for (float v : want) want2 += double(v) * double(v);
  const double err = rel_error(got, want) * (want2 > 0 ? std::sqrt(want2) : 1.0);  // ||got - want||
  return err / std::max(std::sqrt(want2), 0.2 * std::sqrt(dy2));
}

template <typename T>
class CudaActivation : public ::testing::Test {};
TYPED_TEST_SUITE(CudaActivation, StorageTypes);

const size_t kOffsets[] = {0, 1};  // 1: every pointer misaligned

TYPED_TEST(CudaActivation, GeluMatchesCpu) {
  using T = TypeParam;
  for (int64_t n : {int64_t(1), int64_t(13), int64_t(4096), int64_t(100003)}) {
    for (size_t off : kOffsets) {
      for (float range : {4.0f, 60.0f}) {
        const uint64_t seed = fresh_seed();
        SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " off " + std::to_string(off) +
                     " range " + std::to_string(range));
        const size_t len = size_t(n) + off;
        const auto x = rounded<T>(random_floats(len, seed, -range, range));
        const auto dy = rounded<T>(random_floats(len, seed + 1));
        DeviceArray<T> dx_in(x), d_dy(dy), d_y(len), d_dx(len);
        d_y.poison();
        d_dx.poison();
        ASSERT_EQ(gpu::gelu_forward(d_y.get() + off, dx_in.get() + off, n, nullptr), Status::kOk);
        ASSERT_EQ(gpu::gelu_backward(d_dx.get() + off, d_dy.get() + off, dx_in.get() + off, n, nullptr), Status::kOk);
        std::vector<float> y(len), dx(len);
        ASSERT_EQ(cpu::gelu_forward(y.data() + off, x.data() + off, n), Status::kOk);
        ASSERT_EQ(cpu::gelu_backward(dx.data() + off, dy.data() + off, x.data() + off, n), Status::kOk);
        EXPECT_LT(stored_rel_error<T>(slice(d_y.download(), off, size_t(n)), slice(y, off, size_t(n))), tolerance<T>());
        EXPECT_LT(
            grad_error(slice(d_dx.download(), off, size_t(n)), slice(dx, off, size_t(n)), slice(dy, off, size_t(n))),
            tolerance<T>());
      }
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaActivation, SwigluMatchesCpu) {
  using T = TypeParam;
  const int64_t shapes[][2] = {{1, 1}, {3, 5}, {17, 64}, {33, 1000}, {8, 2048}};
  for (const auto& s : shapes) {
    for (size_t off : kOffsets) {
      const int64_t N = s[0], F = s[1];
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(N) + " F " + std::to_string(F) + " off " +
                   std::to_string(off));
      const size_t in_len = size_t(N * 2 * F) + off, out_len = size_t(N * F) + off;
      const auto in = rounded<T>(random_floats(in_len, seed, -6.0f, 6.0f));
      const auto dout = rounded<T>(random_floats(out_len, seed + 1));
      DeviceArray<T> d_in(in), d_dout(dout), d_out(out_len), d_din(in_len);
      d_out.poison();
      d_din.poison();
      ASSERT_EQ(gpu::swiglu_forward(d_out.get() + off, d_in.get() + off, N, F, nullptr), Status::kOk);
      ASSERT_EQ(gpu::swiglu_backward(d_din.get() + off, d_dout.get() + off, d_in.get() + off, N, F, nullptr),
                Status::kOk);
      std::vector<float> out(out_len), din(in_len);
      ASSERT_EQ(cpu::swiglu_forward(out.data() + off, in.data() + off, N, F), Status::kOk);
      ASSERT_EQ(cpu::swiglu_backward(din.data() + off, dout.data() + off, in.data() + off, N, F), Status::kOk);
      EXPECT_LT(stored_rel_error<T>(slice(d_out.download(), off, size_t(N * F)), slice(out, off, size_t(N * F))),
                tolerance<T>());
      EXPECT_LT(
          stored_rel_error<T>(slice(d_din.download(), off, size_t(N * 2 * F)), slice(din, off, size_t(N * 2 * F))),
          tolerance<T>());
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaActivation, RejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> a(std::vector<float>(8, 1.0f));
  EXPECT_EQ(gpu::gelu_forward(a.get(), a.get(), -1, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::gelu_forward<T>(nullptr, a.get(), 8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::gelu_forward<T>(nullptr, nullptr, 0, nullptr), Status::kOk);
  EXPECT_EQ(gpu::gelu_backward<T>(a.get(), nullptr, a.get(), 8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::swiglu_forward(a.get(), a.get(), 2, -1, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::swiglu_forward<T>(a.get(), nullptr, 2, 2, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::swiglu_backward(a.get(), a.get(), a.get(), -1, 2, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::swiglu_backward<T>(a.get(), a.get(), nullptr, 2, 2, nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
