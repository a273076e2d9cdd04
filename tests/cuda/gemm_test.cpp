// CUDA (cuBLASLt) GEMM against cpu::gemm on the same rounded inputs: every transpose pair,
// padded strides, beta = 0 over a NaN-poisoned C, beta = 1 accumulation (also bf16 and f16
// inputs into fp32 C), K = 0, misaligned operands, cached plans, the bias and bias + GELU
// epilogues, TF32, and argument checks. The padding of each C row must stay untouched.
// Tolerances (relative L2): fp32 1e-5 (summation order only); bf16 or f16 inputs with fp32 C
// 2e-3 (inputs are identical on both sides, so f16 is no tighter than bf16); bf16 C 1e-2 and
// f16 C 2e-3 (output rounding, 2^-9 and 2^-11); the GELU epilogue in fp32 1e-3 (cuBLASLt may
// take tanh from the hardware approximation, ~2^-11 relative), with f16 C 3e-3 (that plus
// the output rounding); TF32 5e-3 (10-bit mantissas).
#include "kernels/cuda/gemm.cuh"

#include <string>
#include <type_traits>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/gemm.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

namespace kc = kernels::cuda;
using kernels::Status;

// A GemmContext over an 8 MiB workspace, destroyed with the test.
class Context {
 public:
  Context() : workspace_(size_t(8) << 20) {
    EXPECT_EQ(kc::make_gemm_context(&ctx_, workspace_.get(), workspace_.size()), Status::kOk);
  }
  ~Context() { EXPECT_EQ(kc::destroy_gemm_context(&ctx_), Status::kOk); }
  kc::GemmContext& get() { return ctx_; }

 private:
  DeviceArray<unsigned char> workspace_;
  kc::GemmContext ctx_;
};

// A GEMM call shape; pad_* extra elements at the end of each stored row.
struct Shape {
  bool ta, tb;
  int64_t M, N, K, pad_a = 0, pad_b = 0, pad_c = 0;

  int64_t a_rows() const { return ta ? K : M; }
  int64_t lda() const { return (ta ? M : K) + pad_a; }
  int64_t b_rows() const { return tb ? N : K; }
  int64_t ldb() const { return (tb ? K : N) + pad_b; }
  int64_t ldc() const { return N + pad_c; }
  std::string str() const {
    return std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
           " K=" + std::to_string(K) + " lda=" + std::to_string(lda()) + " ldb=" + std::to_string(ldb()) +
           " ldc=" + std::to_string(ldc());
  }
};

template <typename T, typename Tc>
double gemm_tolerance() {
  if constexpr (!std::is_same_v<Tc, float>)
    return tolerance<Tc>();  // a 16-bit C: its rounding
  else
    return std::is_same_v<T, float> ? 1e-5 : 2e-3;
}

// Fresh operands of a shape, rounded through their storage types; C random (beta != 0
// reads it) and, on the device, poisoned when beta == 0 (it must be ignored).
template <typename T, typename Tc>
struct Operands {
  std::vector<float> a, b, c;
  DeviceArray<T> da, db;
  DeviceArray<Tc> dc;
  Operands(const Shape& s, float beta, uint64_t seed)
      : a(rounded<T>(random_floats(size_t(s.a_rows() * s.lda()), seed))),
        b(rounded<T>(random_floats(size_t(s.b_rows() * s.ldb()), seed + 1))),
        c(rounded<Tc>(random_floats(size_t(s.M * s.ldc()), seed + 2))),
        da(a),
        db(b),
        dc(c) {
    if (beta == 0.0f) dc.poison();
  }
};

// The M x N block of a row-major matrix with row stride ld.
std::vector<float> block(const std::vector<float>& m, int64_t M, int64_t N, int64_t ld) {
  std::vector<float> out;
  for (int64_t i = 0; i < M; ++i) out.insert(out.end(), m.begin() + i * ld, m.begin() + i * ld + N);
  return out;
}

// Padding columns [N, ld) of each row: untouched, i.e. still NaN where C was poisoned,
// else still the value the CPU side kept.
void expect_padding_kept(const std::vector<float>& got, const std::vector<float>& want, int64_t M, int64_t N,
                         int64_t ld, bool poisoned) {
  int64_t changed = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = N; j < ld; ++j) {
      const float g = got[size_t(i * ld + j)];
      changed += poisoned ? !std::isnan(g) : g != want[size_t(i * ld + j)];
    }
  }
  EXPECT_EQ(changed, 0) << "padding elements written";
}

template <typename T, typename Tc>
void check_gemm(const kc::GemmContext& ctx, const Shape& s, float alpha, float beta, uint64_t seed) {
  SCOPED_TRACE(s.str() + " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta));
  Operands<T, Tc> op(s, beta, seed);
  ASSERT_EQ((kc::gemm<T, Tc>(ctx, s.ta, s.tb, s.M, s.N, s.K, alpha, op.da.get(), s.lda(), op.db.get(), s.ldb(), beta,
                             op.dc.get(), s.ldc(), nullptr)),
            Status::kOk);
  ASSERT_EQ(kernels::cpu::gemm(s.ta, s.tb, s.M, s.N, s.K, alpha, op.a.data(), s.lda(), op.b.data(), s.ldb(), beta,
                               op.c.data(), s.ldc()),
            Status::kOk);
  const std::vector<float> got = op.dc.download();
  EXPECT_LT(rel_error(block(got, s.M, s.N, s.ldc()), block(op.c, s.M, s.N, s.ldc())), (gemm_tolerance<T, Tc>()));
  expect_padding_kept(got, op.c, s.M, s.N, s.ldc(), beta == 0.0f);
}

template <typename T, typename Tc>
struct TypePair {
  using In = T;
  using Out = Tc;
};
using GemmTypes = ::testing::Types<TypePair<float, float>, TypePair<bf16, bf16>, TypePair<bf16, float>,
                                   TypePair<f16, f16>, TypePair<f16, float>>;

template <typename P>
class CudaGemm : public ::testing::Test {};
TYPED_TEST_SUITE(CudaGemm, GemmTypes);

// Awkward sizes: odd, N = 1, M = 1, K = 1, larger than a tile, padded strides.
std::vector<Shape> shapes(bool ta, bool tb) {
  return {{ta, tb, 37, 53, 71}, {ta, tb, 1, 65, 33, 3, 5, 7},     {ta, tb, 129, 1, 17, 2, 0, 1},
          {ta, tb, 64, 96, 1},  {ta, tb, 200, 300, 257, 8, 8, 8}, {ta, tb, 256, 384, 512}};
}

TYPED_TEST(CudaGemm, AllTransposesStridesAndBetas) {
  using T = typename TypeParam::In;
  using Tc = typename TypeParam::Out;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  uint64_t k = 0;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (const Shape& s : shapes(ta, tb)) {
        check_gemm<T, Tc>(ctx.get(), s, 1.0f, 0.0f, seed + 10 * k++);  // overwrite a poisoned C
        check_gemm<T, Tc>(ctx.get(), s, 0.5f, 1.0f, seed + 10 * k++);  // accumulate (dW += ...)
        check_gemm<T, Tc>(ctx.get(), s, 1.0f, 0.25f, seed + 10 * k++);
      }
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaGemm, KZeroScalesC) {
  using T = typename TypeParam::In;
  using Tc = typename TypeParam::Out;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  check_gemm<T, Tc>(ctx.get(), {false, true, 5, 7, 0, 1, 1, 2}, 1.0f, 0.0f, seed);  // zeros, NaN ignored
  check_gemm<T, Tc>(ctx.get(), {false, true, 5, 7, 0, 1, 1, 2}, 1.0f, 2.0f, seed + 10);
  expect_device_clean();
}

// Operands one element past an aligned address (chunks of rows at odd offsets), and a
// repeated call (cached plan) with other alpha/beta giving bit-identical results.
TYPED_TEST(CudaGemm, MisalignedOperandsAndCachedPlans) {
  using T = typename TypeParam::In;
  using Tc = typename TypeParam::Out;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  const Shape s{false, true, 33, 45, 29};
  const std::vector<float> a = rounded<T>(random_floats(size_t(s.M * s.K + 1), seed));
  const std::vector<float> b = rounded<T>(random_floats(size_t(s.N * s.K + 1), seed + 1));
  DeviceArray<T> da(a), db(b);
  DeviceArray<Tc> dc(size_t(s.M * s.N + 1));
  dc.poison();
  std::vector<float> c(size_t(s.M * s.N + 1), 0.0f);
  ASSERT_EQ((kc::gemm<T, Tc>(ctx.get(), false, true, s.M, s.N, s.K, 1.0f, da.get() + 1, s.K, db.get() + 1, s.K, 0.0f,
                             dc.get() + 1, s.N, nullptr)),
            Status::kOk);
  ASSERT_EQ(kernels::cpu::gemm(false, true, s.M, s.N, s.K, 1.0f, a.data() + 1, s.K, b.data() + 1, s.K, 0.0f,
                               c.data() + 1, s.N),
            Status::kOk);
  std::vector<float> got = dc.download();
  EXPECT_LT(rel_error(std::vector<float>(got.begin() + 1, got.end()), std::vector<float>(c.begin() + 1, c.end())),
            (gemm_tolerance<T, Tc>()));
  EXPECT_TRUE(std::isnan(got[0])) << "element before C written";

  // Same shape and alignment at aligned addresses twice: the second call reuses the plan.
  DeviceArray<Tc> first(size_t(s.M * s.N)), second(size_t(s.M * s.N));
  first.poison();
  second.poison();
  for (DeviceArray<Tc>* out : {&first, &second}) {
    ASSERT_EQ((kc::gemm<T, Tc>(ctx.get(), false, true, s.M, s.N, s.K, 0.75f, da.get(), s.K, db.get(), s.K, 0.0f,
                               out->get(), s.N, nullptr)),
              Status::kOk);
  }
  EXPECT_EQ(first.download(), second.download());
  expect_device_clean();
}

// Bias and bias + GELU epilogues (C is T): C = [gelu](alpha op(A) op(B) + beta C + bias).
template <typename T>
class CudaGemmEpilogue : public ::testing::Test {};
TYPED_TEST_SUITE(CudaGemmEpilogue, StorageTypes);

// cpu::gemm plus the bias on each row of the M x N block: the pre-activation.
std::vector<float> cpu_gemm_bias(const Shape& s, float alpha, float beta, const std::vector<float>& a,
                                 const std::vector<float>& b, std::vector<float> c, const std::vector<float>& bias) {
  EXPECT_EQ(kernels::cpu::gemm(s.ta, s.tb, s.M, s.N, s.K, alpha, a.data(), s.lda(), b.data(), s.ldb(), beta, c.data(),
                               s.ldc()),
            Status::kOk);
  std::vector<float> pre = block(c, s.M, s.N, s.ldc());
  for (int64_t i = 0; i < s.M; ++i) {
    for (int64_t j = 0; j < s.N; ++j) pre[size_t(i * s.N + j)] += bias[size_t(j)];
  }
  return pre;
}

TYPED_TEST(CudaGemmEpilogue, BiasMatchesCpu) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  uint64_t k = 0;
  for (const Shape& s : {Shape{false, true, 37, 53, 71}, Shape{false, true, 1, 96, 64, 0, 0, 3},
                         Shape{true, false, 130, 7, 33, 1, 2, 0}, Shape{false, false, 256, 384, 128}}) {
    for (float beta : {0.0f, 1.0f}) {
      SCOPED_TRACE(s.str() + " beta=" + std::to_string(beta));
      Operands<T, T> op(s, beta, seed + 10 * k++);
      const std::vector<float> bias = rounded<T>(random_floats(size_t(s.N), seed + 10 * k++));
      DeviceArray<T> dbias(bias);
      ASSERT_EQ(kc::gemm_bias<T>(ctx.get(), s.ta, s.tb, s.M, s.N, s.K, 1.0f, op.da.get(), s.lda(), op.db.get(), s.ldb(),
                                 beta, op.dc.get(), s.ldc(), dbias.get(), nullptr),
                Status::kOk);
      const std::vector<float> want = cpu_gemm_bias(s, 1.0f, beta, op.a, op.b, op.c, bias);
      const std::vector<float> got = op.dc.download();
      EXPECT_LT(rel_error(block(got, s.M, s.N, s.ldc()), want), tolerance<T>());
      expect_padding_kept(got, op.c, s.M, s.N, s.ldc(), beta == 0.0f);
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaGemmEpilogue, BiasGeluMatchesCpu) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const double gelu_tol = std::is_same_v<T, float> ? 1e-3 : std::is_same_v<T, f16> ? 3e-3 : 1e-2;
  Context ctx;
  uint64_t k = 0;
  for (const Shape& s : {Shape{false, true, 37, 53, 71}, Shape{false, true, 64, 128, 96, 0, 0, 5}}) {
    for (bool keep_pre : {false, true}) {
      SCOPED_TRACE(s.str() + (keep_pre ? " with pre-activation" : ""));
      Operands<T, T> op(s, 0.0f, seed + 10 * k++);
      const std::vector<float> bias = rounded<T>(random_floats(size_t(s.N), seed + 10 * k++));
      DeviceArray<T> dbias(bias);
      const int64_t ld_pre = (s.N + 7) / 8 * 8;
      DeviceArray<T> dpre(size_t(s.M * ld_pre));
      dpre.poison();
      ASSERT_EQ(kc::gemm_bias_gelu<T>(ctx.get(), s.ta, s.tb, s.M, s.N, s.K, 1.0f, op.da.get(), s.lda(), op.db.get(),
                                      s.ldb(), 0.0f, op.dc.get(), s.ldc(), dbias.get(), keep_pre ? dpre.get() : nullptr,
                                      ld_pre, nullptr),
                Status::kOk);
      const std::vector<float> pre = cpu_gemm_bias(s, 1.0f, 0.0f, op.a, op.b, op.c, bias);
      std::vector<float> act(pre.size());
      ASSERT_EQ(kernels::cpu::gelu_forward(act.data(), pre.data(), int64_t(pre.size())), Status::kOk);
      const std::vector<float> got = op.dc.download();
      EXPECT_LT(rel_error(block(got, s.M, s.N, s.ldc()), act), gelu_tol);
      expect_padding_kept(got, op.c, s.M, s.N, s.ldc(), true);
      if (keep_pre) {
        EXPECT_LT(rel_error(block(dpre.download(), s.M, s.N, ld_pre), pre), tolerance<T>());
      }
    }
  }
  expect_device_clean();
}

TEST(CudaGemmTf32, IsCloseToFp32) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Context ctx;
  ctx.get().allow_tf32 = true;
  const Shape s{false, true, 128, 192, 256};
  Operands<float, float> op(s, 0.0f, seed);
  ASSERT_EQ((kc::gemm<float, float>(ctx.get(), false, true, s.M, s.N, s.K, 1.0f, op.da.get(), s.lda(), op.db.get(),
                                    s.ldb(), 0.0f, op.dc.get(), s.ldc(), nullptr)),
            Status::kOk);
  ASSERT_EQ(kernels::cpu::gemm(false, true, s.M, s.N, s.K, 1.0f, op.a.data(), s.lda(), op.b.data(), s.ldb(), 0.0f,
                               op.c.data(), s.ldc()),
            Status::kOk);
  EXPECT_LT(rel_error(op.dc.download(), op.c), 5e-3);
  expect_device_clean();
}

TEST(CudaGemmArgs, RejectsBadArguments) {
  Context ctx;
  const kc::GemmContext& c = ctx.get();
  DeviceArray<float> buf(std::vector<float>(64, 1.0f));
  float* p = buf.get();
  auto g = [&](int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, const float* A, const float* B,
               float* C) {
    return kc::gemm<float, float>(c, false, false, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, nullptr);
  };
  EXPECT_EQ(g(-1, 2, 2, 2, 2, 2, p, p, p), Status::kInvalidArgument);
  EXPECT_EQ(g(2, 2, 3, 2, 2, 2, p, p, p), Status::kInvalidArgument);  // lda < K
  EXPECT_EQ(g(2, 3, 2, 2, 2, 3, p, p, p), Status::kInvalidArgument);  // ldb < N
  EXPECT_EQ(g(2, 3, 2, 2, 3, 2, p, p, p), Status::kInvalidArgument);  // ldc < N
  EXPECT_EQ(g(2, 2, 2, 2, 2, 2, p, p, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(g(2, 2, 2, 2, 2, 2, nullptr, p, p), Status::kInvalidArgument);
  EXPECT_EQ(g(0, 2, 2, 2, 2, 2, nullptr, nullptr, nullptr), Status::kOk);  // empty: nothing read
  EXPECT_EQ(g(int64_t(1) << 31, 1, 1, 1, 1, 1, p, p, p), Status::kNotSupported);
  const kc::GemmContext none;
  EXPECT_EQ((kc::gemm<float, float>(none, false, false, 2, 2, 2, 1.0f, p, 2, p, 2, 0.0f, p, 2, nullptr)),
            Status::kInvalidArgument);
  EXPECT_EQ(kc::gemm_bias<float>(c, false, true, 2, 2, 2, 1.0f, p, 2, p, 2, 0.0f, p, 2, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kc::gemm_bias<float>(c, false, true, 2, 2, 0, 1.0f, p, 1, p, 1, 0.0f, p, 2, p, nullptr),
            Status::kNotSupported);
  EXPECT_EQ(kc::gemm_bias_gelu<float>(c, false, true, 2, 9, 2, 1.0f, p, 2, p, 2, 0.0f, p, 9, p, p + 32, 8, nullptr),
            Status::kInvalidArgument);  // ld_pre < N
  EXPECT_EQ(kc::gemm_bias_gelu<float>(c, false, true, 2, 9, 2, 1.0f, p, 2, p, 2, 0.0f, p, 9, p, p + 32, 12, nullptr),
            Status::kNotSupported);  // ld_pre not a multiple of 8
  kc::GemmContext other;
  EXPECT_EQ(kc::make_gemm_context(nullptr, p, 64), Status::kInvalidArgument);
  EXPECT_EQ(kc::make_gemm_context(&other, nullptr, 64), Status::kInvalidArgument);
  EXPECT_EQ(kc::make_gemm_context(&other, p + 1, 64), Status::kInvalidArgument);  // not 256-byte aligned
  EXPECT_EQ(kc::destroy_gemm_context(nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
