// CUDA grouped expert GEMMs against one kernels/cpu gemm per expert on the same (rounded)
// inputs: Y = X W^T, dX = dY W (overwritten rows only: rows outside the experts keep their
// values), dW += dY^T X into fp32, for float, bf16 and f16, with empty experts, a non-zero first
// offset and awkward sizes; and argument checks.
#include "kernels/cuda/grouped_gemm.cuh"

#include <string>

#include "kernels/cpu/gemm.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;
using kernels::Status;
using VF = std::vector<float>;
using VL = std::vector<int64_t>;

// A cuBLAS context for one test.
class Context {
 public:
  Context() { EXPECT_EQ(gpu::make_grouped_gemm_context(&ctx_), Status::kOk); }
  ~Context() { gpu::destroy_grouped_gemm_context(&ctx_); }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  const gpu::GroupedGemmContext& get() const { return ctx_; }

 private:
  gpu::GroupedGemmContext ctx_;
};

struct Shape {
  VL offsets;  // E + 1, host
  int64_t N_out, K;
};

template <typename T>
class CudaGroupedGemm : public ::testing::Test {};
TYPED_TEST_SUITE(CudaGroupedGemm, StorageTypes);

TYPED_TEST(CudaGroupedGemm, MatchesCpuPerExpert) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<Shape> shapes = {
      {{0, 17, 17, 18, 18, 58, 188}, 48, 40},  // experts 1 and 3 empty, one single-row expert
      {{3, 3, 40, 41, 141}, 33, 19},           // rows before offsets[0] and an empty first expert
      {{0, 300, 300, 557, 700}, 384, 256},     // tensor-core sized
      {{0, 0, 0}, 16, 16},                     // no rows at all
  };
  Context ctx;
  for (const Shape& sh : shapes) {
    const int64_t E = int64_t(sh.offsets.size()) - 1, N_out = sh.N_out, K = sh.K;
    const int64_t rows = sh.offsets.back() + 2;  // two trailing rows no expert owns
    SCOPED_TRACE("E " + std::to_string(E) + " N_out " + std::to_string(N_out) + " K " + std::to_string(K));
    const VF x = rounded<T>(random_floats(size_t(rows * K), seed + 1));
    const VF w = rounded<T>(random_floats(size_t(E * N_out * K), seed + 2));
    const VF dy = rounded<T>(random_floats(size_t(rows * N_out), seed + 3));
    const VF y0 = rounded<T>(random_floats(size_t(rows * N_out), seed + 4));  // prior contents of Y
    const VF dx0 = rounded<T>(random_floats(size_t(rows * K), seed + 5));
    const VF dw0 = random_floats(size_t(E * N_out * K), seed + 6);
    VF want_y = y0, want_dx = dx0, want_dw = dw0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = sh.offsets[size_t(e)], n = sh.offsets[size_t(e + 1)] - r0;
      if (n == 0) continue;
      const float* we = w.data() + e * N_out * K;
      ASSERT_EQ(cpu::gemm(false, true, n, N_out, K, 1.0f, x.data() + r0 * K, K, we, K, 0.0f, want_y.data() + r0 * N_out,
                          N_out),
                Status::kOk);
      ASSERT_EQ(cpu::gemm(false, false, n, K, N_out, 1.0f, dy.data() + r0 * N_out, N_out, we, K, 0.0f,
                          want_dx.data() + r0 * K, K),
                Status::kOk);
      ASSERT_EQ(cpu::gemm(true, false, N_out, K, n, 1.0f, dy.data() + r0 * N_out, N_out, x.data() + r0 * K, K, 1.0f,
                          want_dw.data() + e * N_out * K, K),
                Status::kOk);
    }
    DeviceArray<T> d_x(x), d_w(w), d_dy(dy), d_y(y0), d_dx(dx0);
    DeviceArray<float> d_dw(dw0);
    ASSERT_EQ(gpu::grouped_gemm<T>(ctx.get(), d_y.get(), d_x.get(), d_w.get(), sh.offsets.data(), E, N_out, K, nullptr),
              Status::kOk);
    ASSERT_EQ(
        gpu::grouped_gemm_dx<T>(ctx.get(), d_dx.get(), d_dy.get(), d_w.get(), sh.offsets.data(), E, N_out, K, nullptr),
        Status::kOk);
    ASSERT_EQ(
        gpu::grouped_gemm_dw<T>(ctx.get(), d_dw.get(), d_dy.get(), d_x.get(), sh.offsets.data(), E, N_out, K, nullptr),
        Status::kOk);
    const VF y = d_y.download(), dx = d_dx.download(), dw = d_dw.download();
    EXPECT_LT(rel_error(y, want_y), tolerance<T>());
    EXPECT_LT(rel_error(dx, want_dx), tolerance<T>());
    // fp32 accumulation of identical (rounded) inputs on both sides: summation order only.
    EXPECT_LT(rel_error(dw, want_dw), 1e-5);
    // Rows outside the experts' ranges and the weights of empty experts stay untouched, bit for bit.
    const int64_t first = sh.offsets.front(), last = sh.offsets.back();
    for (int64_t r = 0; r < rows; ++r) {
      if (r >= first && r < last) continue;
      for (int64_t c = 0; c < N_out; ++c) ASSERT_EQ(y[size_t(r * N_out + c)], y0[size_t(r * N_out + c)]) << r;
      for (int64_t c = 0; c < K; ++c) ASSERT_EQ(dx[size_t(r * K + c)], dx0[size_t(r * K + c)]) << r;
    }
    for (int64_t e = 0; e < E; ++e) {
      if (sh.offsets[size_t(e + 1)] != sh.offsets[size_t(e)]) continue;
      for (int64_t i = e * N_out * K; i < (e + 1) * N_out * K; ++i) ASSERT_EQ(dw[size_t(i)], dw0[size_t(i)]) << e;
    }
  }
  expect_device_clean();
}

TEST(CudaGroupedGemm, RejectsBadArguments) {
  constexpr Status kInvalid = Status::kInvalidArgument;
  Context ctx;
  DeviceArray<float> a(std::vector<float>(256, 1.0f));
  const VL good = {0, 2, 4}, decreasing = {0, 3, 2}, negative = {-1, 2, 4};
  const gpu::GroupedGemmContext empty;
  EXPECT_EQ(gpu::grouped_gemm<float>(empty, a.get(), a.get(), a.get(), good.data(), 2, 4, 4, nullptr), kInvalid);
  EXPECT_EQ(gpu::grouped_gemm<float>(ctx.get(), a.get(), a.get(), a.get(), decreasing.data(), 2, 4, 4, nullptr),
            kInvalid);
  EXPECT_EQ(gpu::grouped_gemm_dx<float>(ctx.get(), a.get(), a.get(), a.get(), negative.data(), 2, 4, 4, nullptr),
            kInvalid);
  EXPECT_EQ(gpu::grouped_gemm_dw<float>(ctx.get(), a.get(), a.get(), a.get(), good.data(), 2, 0, 4, nullptr),
            kInvalid);  // N_out = 0
  EXPECT_EQ(gpu::grouped_gemm<float>(ctx.get(), a.get(), nullptr, a.get(), good.data(), 2, 4, 4, nullptr), kInvalid);
  EXPECT_EQ(gpu::grouped_gemm_dw<float>(ctx.get(), a.get(), a.get(), a.get(), nullptr, 2, 4, 4, nullptr), kInvalid);
  EXPECT_EQ(gpu::make_grouped_gemm_context(nullptr), kInvalid);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
