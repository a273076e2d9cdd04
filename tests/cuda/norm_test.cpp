// CUDA LayerNorm (with and without bias) and RMSNorm, forward and backward, against
// kernels/cpu/norm on the same rounded inputs, for float, bf16 and f16: y, mean, rstd; dx; dw and
// db accumulated (+=) onto random values and bitwise the same on a second run. Shapes cover
// one row, one column, C not a multiple of a pack, large C; offset 1 misaligns every
// pointer (the element path). Backward takes the CPU's mean/rstd on both sides.
#include "kernels/cpu/norm.h"

#include "kernels/cuda/norm.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

// Fp32 outputs (statistics, parameter gradients) from the same inputs differ by summation
// order (fp32 on the GPU, double on the CPU) only.
constexpr double kFp32Tolerance = 1e-5;
constexpr float kEps = 1e-5f;

std::vector<float> slice(const std::vector<float>& v, size_t off, size_t n) {
  return std::vector<float>(v.begin() + long(off), v.begin() + long(off + n));
}

template <typename T>
class CudaNorm : public ::testing::Test {};
TYPED_TEST_SUITE(CudaNorm, StorageTypes);

const int64_t kShapes[][2] = {{1, 1}, {1, 768}, {9, 1}, {37, 769}, {130, 1024}, {300, 64}, {5, 4104}};
const size_t kOffsets[] = {0, 1};

struct Case {
  int64_t N, C;
  size_t off;
  uint64_t seed;
  std::string name() const {
    return "seed " + std::to_string(seed) + " N " + std::to_string(N) + " C " + std::to_string(C) + " off " +
           std::to_string(off);
  }
};

// Forward and backward of LayerNorm (bias: with b and db) on one case.
template <typename T>
void check_layernorm(const Case& k, bool bias) {
  const int64_t N = k.N, C = k.C;
  const size_t off = k.off, NC = size_t(N * C), len = NC + off, rows = size_t(N);
  const auto x = rounded<T>(random_floats(len, k.seed, -2.0f, 3.0f));
  const auto w = rounded<T>(random_floats(size_t(C) + off, k.seed + 1, 0.5f, 1.5f));
  const auto b = rounded<T>(random_floats(size_t(C) + off, k.seed + 2));
  const auto dy = rounded<T>(random_floats(len, k.seed + 3));
  const auto dw0 = random_floats(size_t(C), k.seed + 4), db0 = random_floats(size_t(C), k.seed + 5);
  DeviceArray<T> d_x(x), d_w(w), d_b(b), d_dy(dy), d_y(len), d_dx(len);
  DeviceArray<float> d_mean(rows), d_rstd(rows);
  d_y.poison();
  d_mean.poison();
  d_rstd.poison();
  const T* bp = bias ? d_b.get() + off : nullptr;
  ASSERT_EQ(gpu::layernorm_forward(d_y.get() + off, d_mean.get(), d_rstd.get(), d_x.get() + off, d_w.get() + off, bp, N,
                                   C, kEps, nullptr),
            Status::kOk);
  std::vector<float> y(len), mean(rows), rstd(rows);
  ASSERT_EQ(cpu::layernorm_forward(y.data() + off, mean.data(), rstd.data(), x.data() + off, w.data() + off,
                                   bias ? b.data() + off : nullptr, N, C, kEps),
            Status::kOk);
  EXPECT_LT(rel_error(slice(d_y.download(), off, NC), slice(y, off, NC)), tolerance<T>());
  EXPECT_LT(rel_error(d_mean.download(), mean), kFp32Tolerance);
  EXPECT_LT(rel_error(d_rstd.download(), rstd), kFp32Tolerance);

  // Backward on the CPU's statistics; twice on the GPU to check determinism.
  d_mean.upload(mean);
  d_rstd.upload(rstd);
  DeviceArray<float> d_dw(dw0), d_db(db0), d_dw2(dw0), d_db2(db0);
  d_dx.poison();
  ASSERT_EQ(gpu::layernorm_backward(d_dx.get() + off, d_dw.get(), bias ? d_db.get() : nullptr, d_dy.get() + off,
                                    d_x.get() + off, d_w.get() + off, d_mean.get(), d_rstd.get(), N, C, nullptr),
            Status::kOk);
  ASSERT_EQ(gpu::layernorm_backward(d_dx.get() + off, d_dw2.get(), bias ? d_db2.get() : nullptr, d_dy.get() + off,
                                    d_x.get() + off, d_w.get() + off, d_mean.get(), d_rstd.get(), N, C, nullptr),
            Status::kOk);
  std::vector<float> dx(len), dw = dw0, db = db0;
  ASSERT_EQ(cpu::layernorm_backward(dx.data() + off, dw.data(), bias ? db.data() : nullptr, dy.data() + off,
                                    x.data() + off, w.data() + off, mean.data(), rstd.data(), N, C),
            Status::kOk);
  EXPECT_LT(stored_rel_error<T>(slice(d_dx.download(), off, NC), slice(dx, off, NC)), tolerance<T>());
  const auto got_dw = d_dw.download(), got_db = d_db.download();
  EXPECT_LT(rel_error(got_dw, dw), kFp32Tolerance);
  EXPECT_LT(rel_error(got_db, db), kFp32Tolerance);  // db0 itself when there is no bias
  EXPECT_EQ(got_dw, d_dw2.download());
  EXPECT_EQ(got_db, d_db2.download());
}

template <typename T>
void check_rmsnorm(const Case& k) {
  const int64_t N = k.N, C = k.C;
  const size_t off = k.off, NC = size_t(N * C), len = NC + off, rows = size_t(N);
  const auto x = rounded<T>(random_floats(len, k.seed, -2.0f, 3.0f));
  const auto w = rounded<T>(random_floats(size_t(C) + off, k.seed + 1, 0.5f, 1.5f));
  const auto dy = rounded<T>(random_floats(len, k.seed + 3));
  const auto dw0 = random_floats(size_t(C), k.seed + 4);
  DeviceArray<T> d_x(x), d_w(w), d_dy(dy), d_y(len), d_dx(len);
  DeviceArray<float> d_rstd(rows);
  d_y.poison();
  d_rstd.poison();
  ASSERT_EQ(gpu::rmsnorm_forward(d_y.get() + off, d_rstd.get(), d_x.get() + off, d_w.get() + off, N, C, kEps, nullptr),
            Status::kOk);
  std::vector<float> y(len), rstd(rows);
  ASSERT_EQ(cpu::rmsnorm_forward(y.data() + off, rstd.data(), x.data() + off, w.data() + off, N, C, kEps), Status::kOk);
  EXPECT_LT(rel_error(slice(d_y.download(), off, NC), slice(y, off, NC)), tolerance<T>());
  EXPECT_LT(rel_error(d_rstd.download(), rstd), kFp32Tolerance);

  d_rstd.upload(rstd);
  DeviceArray<float> d_dw(dw0), d_dw2(dw0);
  d_dx.poison();
  ASSERT_EQ(gpu::rmsnorm_backward(d_dx.get() + off, d_dw.get(), d_dy.get() + off, d_x.get() + off, d_w.get() + off,
                                  d_rstd.get(), N, C, nullptr),
            Status::kOk);
  ASSERT_EQ(gpu::rmsnorm_backward(d_dx.get() + off, d_dw2.get(), d_dy.get() + off, d_x.get() + off, d_w.get() + off,
                                  d_rstd.get(), N, C, nullptr),
            Status::kOk);
  std::vector<float> dx(len), dw = dw0;
  ASSERT_EQ(cpu::rmsnorm_backward(dx.data() + off, dw.data(), dy.data() + off, x.data() + off, w.data() + off,
                                  rstd.data(), N, C),
            Status::kOk);
  EXPECT_LT(stored_rel_error<T>(slice(d_dx.download(), off, NC), slice(dx, off, NC)), tolerance<T>());
  const auto got_dw = d_dw.download();
  EXPECT_LT(rel_error(got_dw, dw), kFp32Tolerance);
  EXPECT_EQ(got_dw, d_dw2.download());
}

TYPED_TEST(CudaNorm, LayerNormMatchesCpu) {
  for (const auto& s : kShapes) {
    for (size_t off : kOffsets) {
      for (bool bias : {true, false}) {
        const Case k{s[0], s[1], off, fresh_seed()};
        SCOPED_TRACE(k.name() + (bias ? " bias" : " no bias"));
        check_layernorm<TypeParam>(k, bias);
      }
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaNorm, RmsNormMatchesCpu) {
  for (const auto& s : kShapes) {
    for (size_t off : kOffsets) {
      const Case k{s[0], s[1], off, fresh_seed()};
      SCOPED_TRACE(k.name());
      check_rmsnorm<TypeParam>(k);
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaNorm, EmptyBatchIsANoOp) {
  using T = TypeParam;
  EXPECT_EQ(gpu::layernorm_forward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, kEps, nullptr),
            Status::kOk);
  EXPECT_EQ(gpu::rmsnorm_backward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, nullptr), Status::kOk);
  expect_device_clean();
}

TYPED_TEST(CudaNorm, RejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> a(std::vector<float>(8, 1.0f));
  DeviceArray<float> f(std::vector<float>(8, 1.0f));
  T* p = a.get();
  float* q = f.get();
  EXPECT_EQ(gpu::layernorm_forward(p, q, q, p, p, p, 2, 0, kEps, nullptr), Status::kInvalidArgument);  // C = 0
  EXPECT_EQ(gpu::layernorm_forward(p, q, q, p, p, p, -1, 4, kEps, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_forward(p, q, q, p, p, p, 2, 4, -1.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_forward(p, q, q, p, p, p, 2, 4, NAN, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_forward<T>(p, nullptr, q, p, p, p, 2, 4, kEps, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_backward<T>(p, q, q, p, p, nullptr, q, q, 2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_backward<T>(p, nullptr, q, p, p, p, q, q, 2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::layernorm_backward(p, q, q, p, p, p, q, q, 2, -4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rmsnorm_forward(p, q, p, p, 2, 0, kEps, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rmsnorm_forward<T>(p, nullptr, p, p, 2, 4, kEps, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rmsnorm_forward(p, q, p, p, 2, 4, -kEps, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rmsnorm_backward<T>(p, q, p, p, p, nullptr, 2, 4, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rmsnorm_backward(p, q, p, p, p, q, -2, 4, nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
