// CUDA generation kernels against the CPU ones on the same rounded inputs, for float, bf16
// and f16: attention_decode (prefill, single decode steps, several rows, GQA/MQA, key_begin,
// padded strides, an unaligned q stride that takes the scalar path) and matvec (ragged and
// aligned sizes, padded rows, empty sizes), plus argument validation.
#include "kernels/cuda/kv_attention.cuh"

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/kv_attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
using kernels::cpu::KvAttentionShape;

// Relative L2 tolerances against the fp32 CPU kernels on the same inputs. attention_decode
// as attention_forward's out (attention_test.cpp): fp32 summation order for float; the
// rounding of P and of the output to T for bf16 and f16 (4x finer for f16). matvec: fp32
// products (exact for bf16 and f16) and sums on both sides, only the order differs.
template <typename T>
constexpr double kOutTol = attention_out_tolerance<T>();
constexpr double kMatvecTol = 1e-5;

std::string name(const KvAttentionShape& s) {
  std::ostringstream os;
  os << "past " << s.past << " n " << s.n << " H " << s.H << " KVH " << s.KVH << " D " << s.D;
  return os.str();
}

// Strides of one decode call: extra elements past the heads of each row.
struct Pad {
  int64_t q, kv, out;
};

// Columns [0, width) of each of `rows` rows of stride ld.
std::vector<float> columns(const std::vector<float>& x, int64_t rows, int64_t ld, int64_t width) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r) out.insert(out.end(), x.begin() + r * ld, x.begin() + r * ld + width);
  return out;
}

template <typename T>
void check_decode(const KvAttentionShape& s, bool masked, const Pad& pad) {
  const uint64_t seed = fresh_seed();
  std::ostringstream trace;
  trace << "seed " << seed << ", " << name(s) << (masked ? ", key_begin" : "") << ", pads " << pad.q << "/" << pad.kv
        << "/" << pad.out;
  SCOPED_TRACE(trace.str());
  const int64_t keys = s.past + s.n;
  const int64_t ldq = s.H * s.D + pad.q, ldkv = s.KVH * s.D + pad.kv, ldo = s.H * s.D + pad.out;
  const std::vector<float> q = rounded<T>(random_floats(size_t(s.n * ldq), seed, -2.0f, 2.0f));
  const std::vector<float> k = rounded<T>(random_floats(size_t(keys * ldkv), seed + 1, -2.0f, 2.0f));
  const std::vector<float> v = rounded<T>(random_floats(size_t(keys * ldkv), seed + 2));
  // Absolute first keys of the new rows: segments of 5 positions attend within themselves
  // (as media does); some rows ask for keys past themselves (clamped) or before 0.
  std::vector<int32_t> key_begin(size_t(s.n));
  for (int64_t i = 0; i < s.n; ++i) {
    const int64_t t = s.past + i;
    key_begin[size_t(i)] = (t / 5) % 2 == 1 ? int32_t(t / 5 * 5) : (t % 13 == 0 ? int32_t(t + 3) : -1);
  }

  std::vector<float> want(size_t(s.n * ldo), 0.0f);
  std::vector<float> scratch(kernels::cpu::attention_decode_scratch_floats(s, 1));
  ASSERT_EQ(kernels::cpu::attention_decode(want.data(), ldo, q.data(), ldq, k.data(), v.data(), ldkv, s, scratch.data(),
                                           scratch.size(), masked ? key_begin.data() : nullptr),
            Status::kOk);

  DeviceArray<T> d_q(q), d_k(k), d_v(v), d_out(size_t(s.n * ldo));
  DeviceArray<int32_t> d_kb(key_begin);
  d_out.poison();
  ASSERT_EQ(kernels::cuda::attention_decode<T>(d_out.get(), ldo, d_q.get(), ldq, d_k.get(), d_v.get(), ldkv, s, nullptr,
                                               0, masked ? d_kb.get() : nullptr, nullptr),
            Status::kOk);
  EXPECT_LT(rel_error(columns(d_out.download(), s.n, ldo, s.H * s.D), columns(want, s.n, ldo, s.H * s.D)), kOutTol<T>);
  expect_device_clean();
}

template <typename T>
class CudaKvAttention : public ::testing::Test {};
TYPED_TEST_SUITE(CudaKvAttention, StorageTypes);

TYPED_TEST(CudaKvAttention, DecodeMatchesCpu) {
  const KvAttentionShape shapes[] = {
      {0, 1, 2, 2, 64},     // a single position
      {0, 13, 4, 2, 64},    // prefill, GQA
      {12, 1, 4, 1, 64},    // one decode step, MQA
      {9, 3, 6, 3, 32},     // a few rows at once
      {70, 1, 4, 4, 16},    // past longer than a tile
      {200, 1, 8, 2, 96},   // a longer cache
      {5, 150, 2, 1, 128},  // new rows over several tiles
      {37, 70, 2, 2, 80},   // rows and past both ragged
      {100, 20, 2, 1, 24},  // D not a multiple of 16: scalar path for bf16 and f16 too
  };
  for (const KvAttentionShape& s : shapes) {
    for (bool masked : {false, true}) {
      check_decode<TypeParam>(s, masked, Pad{0, 0, 0});
      check_decode<TypeParam>(s, masked, Pad{16, 8, 24});  // fused-row-like strides, 16-byte multiples
    }
  }
}

// A q stride that is not a multiple of 8 elements takes the scalar path.
TYPED_TEST(CudaKvAttention, DecodeWithOddStridesMatchesCpu) {
  check_decode<TypeParam>(KvAttentionShape{30, 40, 4, 2, 64}, true, Pad{3, 5, 1});
  check_decode<TypeParam>(KvAttentionShape{30, 1, 4, 2, 64}, false, Pad{3, 5, 1});
}

TYPED_TEST(CudaKvAttention, DecodeRejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> buf(4096);
  T* p = buf.get();
  const KvAttentionShape ok{4, 2, 4, 2, 16};
  auto call = [&](const KvAttentionShape& s, int64_t ldo, int64_t ldq, int64_t ldkv, T* out = nullptr) {
    return kernels::cuda::attention_decode<T>(out ? out : p, ldo, p, ldq, p, p, ldkv, s, nullptr, 0, nullptr, nullptr);
  };
  EXPECT_EQ(kernels::cuda::attention_decode_scratch_bytes(ok), 0u);
  EXPECT_EQ(call(ok, 64, 64, 32), Status::kOk);
  EXPECT_EQ(call({4, 0, 4, 2, 16}, 64, 64, 32), Status::kInvalidArgument);
  EXPECT_EQ(call({-1, 2, 4, 2, 16}, 64, 64, 32), Status::kInvalidArgument);
  EXPECT_EQ(call({4, 2, 4, 3, 16}, 64, 64, 32), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 63, 64, 32), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 64, 63, 32), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 64, 64, 31), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_decode<T>(nullptr, 64, p, 64, p, p, 32, ok, nullptr, 0, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(call({4, 2, 1, 1, 129}, 129, 129, 129), Status::kNotSupported);
  expect_device_clean();
}

template <typename T>
void check_matvec(int64_t M, int64_t K, int64_t lda) {
  const uint64_t seed = fresh_seed();
  std::ostringstream trace;
  trace << "seed " << seed << ", M " << M << " K " << K << " lda " << lda;
  SCOPED_TRACE(trace.str());
  const std::vector<float> A = rounded<T>(random_floats(size_t(M * lda), seed));
  const std::vector<float> x = rounded<T>(random_floats(size_t(K), seed + 1));
  std::vector<float> want(static_cast<size_t>(M));
  ASSERT_EQ(kernels::cpu::matvec(want.data(), A.data(), M, K, lda, x.data()), Status::kOk);
  DeviceArray<T> d_A(A), d_x(x);
  DeviceArray<float> d_y(static_cast<size_t>(M));
  d_y.poison();
  ASSERT_EQ(kernels::cuda::matvec<T>(d_y.get(), d_A.get(), M, K, lda, d_x.get(), nullptr), Status::kOk);
  EXPECT_LT(rel_error(d_y.download(), want), kMatvecTol);
  expect_device_clean();
}

TYPED_TEST(CudaKvAttention, MatvecMatchesCpu) {
  check_matvec<TypeParam>(1, 1, 1);
  check_matvec<TypeParam>(1000, 777, 777);    // ragged: per-element loads
  check_matvec<TypeParam>(1000, 777, 784);    // padded rows: 16-byte loads and a tail
  check_matvec<TypeParam>(4099, 1024, 1024);  // aligned
  check_matvec<TypeParam>(3, 4096, 4103);     // long rows, unaligned stride
  check_matvec<TypeParam>(600000, 8, 8);      // more rows than one pass of the grid covers
}

TYPED_TEST(CudaKvAttention, MatvecEmptyAndBadArguments) {
  using T = TypeParam;
  DeviceArray<T> A(64), x(8);
  DeviceArray<float> y(8);
  y.poison();
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), A.get(), 8, 0, 1, x.get(), nullptr), Status::kOk);  // y = 0
  EXPECT_EQ(y.download(), std::vector<float>(8, 0.0f));
  EXPECT_EQ(kernels::cuda::matvec<T>(nullptr, A.get(), 0, 8, 8, x.get(), nullptr), Status::kOk);  // nothing to do
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), A.get(), -1, 8, 8, x.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), A.get(), 8, -1, 8, x.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), A.get(), 8, 8, 7, x.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::matvec<T>(nullptr, A.get(), 8, 8, 8, x.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), nullptr, 8, 8, 8, x.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::matvec<T>(y.get(), A.get(), 8, 8, 8, nullptr, nullptr), Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
