// CUDA element-wise kernels against kernels/cpu/elementwise on the same rounded inputs, for
// float, bf16 and f16: add, add_accumulate, bias_add_rows, bias_grad_accumulate (fp32 += onto
// random values, determinism), scale, on awkward sizes and on misaligned pointers (the
// element-by-element path); convert between float and bf16 or f16; bad arguments.
#include "kernels/cpu/elementwise.h"

#include "kernels/cuda/elementwise.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

// Fp32 outputs summed from the same inputs differ by summation order only.
constexpr double kAccumTolerance = 1e-5;

std::vector<float> slice(const std::vector<float>& v, size_t off, size_t n) {
  return std::vector<float>(v.begin() + long(off), v.begin() + long(off + n));
}

template <typename T>
class CudaElementwise : public ::testing::Test {};
TYPED_TEST_SUITE(CudaElementwise, StorageTypes);

// Sizes not multiples of a pack or block; offset 1 makes every pointer misaligned.
const int64_t kSizes[] = {1, 7, 1000, 100003};
const size_t kOffsets[] = {0, 1};

TYPED_TEST(CudaElementwise, AddAndAccumulateMatchCpu) {
  using T = TypeParam;
  for (int64_t n : kSizes) {
    for (size_t off : kOffsets) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " off " + std::to_string(off));
      const size_t len = size_t(n) + off;
      const auto a = rounded<T>(random_floats(len, seed)), b = rounded<T>(random_floats(len, seed + 1));
      DeviceArray<T> da(a), db(b), dout(len);
      dout.poison();
      ASSERT_EQ(gpu::add(dout.get() + off, da.get() + off, db.get() + off, n, nullptr), Status::kOk);
      ASSERT_EQ(gpu::add_accumulate(da.get() + off, db.get() + off, n, nullptr), Status::kOk);
      std::vector<float> want(len), acc = a;
      ASSERT_EQ(cpu::add(want.data() + off, a.data() + off, b.data() + off, n), Status::kOk);
      ASSERT_EQ(cpu::add_accumulate(acc.data() + off, b.data() + off, n), Status::kOk);
      EXPECT_LT(rel_error(slice(dout.download(), off, n), slice(want, off, n)), tolerance<T>());
      EXPECT_LT(rel_error(da.download(), acc), tolerance<T>());  // includes the untouched element
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaElementwise, ScaleMatchesCpu) {
  using T = TypeParam;
  for (int64_t n : kSizes) {
    for (size_t off : kOffsets) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " off " + std::to_string(off));
      auto x = rounded<T>(random_floats(size_t(n) + off, seed, -3.0f, 3.0f));
      DeviceArray<T> dx(x);
      ASSERT_EQ(gpu::scale(dx.get() + off, -0.37f, n, nullptr), Status::kOk);
      ASSERT_EQ(cpu::scale(x.data() + off, -0.37f, n), Status::kOk);
      EXPECT_LT(stored_rel_error<T>(dx.download(), x), tolerance<T>());
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaElementwise, BiasAddRowsMatchesCpu) {
  using T = TypeParam;
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {37, 64}, {129, 769}, {64, 1024}};
  for (const auto& s : shapes) {
    for (size_t off : kOffsets) {
      const int64_t N = s[0], C = s[1];
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(N) + " C " + std::to_string(C) + " off " +
                   std::to_string(off));
      auto y = rounded<T>(random_floats(size_t(N * C) + off, seed));
      const auto bias = rounded<T>(random_floats(size_t(C) + off, seed + 1));
      DeviceArray<T> dy(y), dbias(bias);
      ASSERT_EQ(gpu::bias_add_rows(dy.get() + off, dbias.get() + off, N, C, nullptr), Status::kOk);
      ASSERT_EQ(cpu::bias_add_rows(y.data() + off, bias.data() + off, N, C), Status::kOk);
      EXPECT_LT(rel_error(dy.download(), y), tolerance<T>());
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaElementwise, BiasGradAccumulatesLikeCpu) {
  using T = TypeParam;
  const int64_t shapes[][2] = {{1, 1}, {1, 9}, {5, 3}, {37, 64}, {1000, 769}, {4099, 1024}};
  for (const auto& s : shapes) {
    const int64_t N = s[0], C = s[1];
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " N " + std::to_string(N) + " C " + std::to_string(C));
    const auto dy = rounded<T>(random_floats(size_t(N * C), seed));
    auto dbias = random_floats(size_t(C), seed + 1);  // accumulated onto
    DeviceArray<T> d_dy(dy);
    DeviceArray<float> d_dbias(dbias), d_again(dbias);
    ASSERT_EQ(gpu::bias_grad_accumulate(d_dbias.get(), d_dy.get(), N, C, nullptr), Status::kOk);
    ASSERT_EQ(gpu::bias_grad_accumulate(d_again.get(), d_dy.get(), N, C, nullptr), Status::kOk);
    ASSERT_EQ(cpu::bias_grad_accumulate(dbias.data(), dy.data(), N, C), Status::kOk);
    const auto got = d_dbias.download();
    EXPECT_LT(rel_error(got, dbias), kAccumTolerance);
    EXPECT_EQ(got, d_again.download());  // deterministic: bitwise the same twice
  }
  expect_device_clean();
}

TEST(CudaConvert, RoundsAndWidensExactly) {
  for (int64_t n : kSizes) {
    for (size_t off : kOffsets) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n) + " off " + std::to_string(off));
      const size_t len = size_t(n) + off;
      const auto x = random_floats(len, seed, -100.0f, 100.0f);
      DeviceArray<float> dx(x), dcopy(len), dwide(len);
      DeviceArray<bf16> dnarrow(len);
      DeviceArray<f16> dhalf(len);
      DeviceArray<float> dwide_half(len);
      dcopy.poison();
      dwide.poison();
      dnarrow.poison();
      dhalf.poison();
      dwide_half.poison();
      ASSERT_EQ(gpu::convert(dnarrow.get() + off, dx.get() + off, n, nullptr), Status::kOk);
      ASSERT_EQ(gpu::convert(dwide.get() + off, dnarrow.get() + off, n, nullptr), Status::kOk);
      ASSERT_EQ(gpu::convert(dhalf.get() + off, dx.get() + off, n, nullptr), Status::kOk);
      ASSERT_EQ(gpu::convert(dwide_half.get() + off, dhalf.get() + off, n, nullptr), Status::kOk);
      ASSERT_EQ(gpu::convert(dcopy.get() + off, dx.get() + off, n, nullptr), Status::kOk);
      const auto want_narrow = slice(rounded<bf16>(x), off, size_t(n));
      EXPECT_EQ(slice(dnarrow.download(), off, size_t(n)), want_narrow);  // round to nearest even
      EXPECT_EQ(slice(dwide.download(), off, size_t(n)), want_narrow);    // widening is exact
      const auto want_half = slice(rounded<f16>(x), off, size_t(n));
      EXPECT_EQ(slice(dhalf.download(), off, size_t(n)), want_half);
      EXPECT_EQ(slice(dwide_half.download(), off, size_t(n)), want_half);
      EXPECT_EQ(slice(dcopy.download(), off, size_t(n)), slice(x, off, size_t(n)));
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaElementwise, RejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> a(std::vector<float>(8, 1.0f));
  DeviceArray<float> f(std::vector<float>(8, 1.0f));
  EXPECT_EQ(gpu::add(a.get(), a.get(), a.get(), -1, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::add<T>(nullptr, a.get(), a.get(), 8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::add<T>(a.get(), a.get(), a.get(), 0, nullptr), Status::kOk);
  EXPECT_EQ(gpu::add_accumulate<T>(a.get(), nullptr, 8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::bias_add_rows(a.get(), a.get(), 2, -1, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::bias_add_rows<T>(a.get(), nullptr, 2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::bias_grad_accumulate(f.get(), a.get(), -2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::bias_grad_accumulate<T>(nullptr, a.get(), 2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::scale<T>(nullptr, 2.0f, 8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::scale(a.get(), 2.0f, -8, nullptr), Status::kInvalidArgument);
  EXPECT_EQ((gpu::convert<float, T>(nullptr, a.get(), 8, nullptr)), Status::kInvalidArgument);
  EXPECT_EQ(gpu::convert(f.get(), a.get(), -1, nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
