// CUDA attention (forward and backward) against the CPU kernel on the same rounded inputs,
// for float, bf16 and f16: ragged sizes, grouped-query heads, every tensor-core head dim and
// generic ones (scalar path), key_begin with clamping, bf16/f16 rows that are not 16-byte
// aligned (scalar path), bitwise-repeatable backward, and argument validation.
#include "kernels/cuda/attention.cuh"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
using kernels::cpu::AttentionShape;

// Relative L2 tolerances against the fp32 CPU kernel on the same inputs.
// float: both sides are fp32 and differ in summation order and in the online softmax's
//   rescaling (exp2 of running maxima), a few 1e-7; 2e-5 leaves room for T in the hundreds.
// bf16 out: rounded to bf16 (2^-9 relative) after P was rounded to bf16 for the P V product.
// bf16 lse: fp32 throughout (bf16 products are exact in fp32), only summation order; 1e-4.
// bf16 dqkv: P and dS are rounded to bf16 before their products (as FlashAttention does),
//   then dQ, dK, dV are rounded to bf16: about 3e-3 expected, 2e-2 allowed.
// f16: the same roundings with 2^-11 in place of 2^-9, so out and dqkv allow a quarter of
//   bf16's (2.5e-3, 5e-3); lse as bf16 (f16 products are exact in fp32 too).
template <typename T>
constexpr double kOutTol = attention_out_tolerance<T>();
template <typename T>
constexpr double kLseTol = std::is_same_v<T, float> ? 2e-5 : 1e-4;
template <typename T>
constexpr double kGradTol = std::is_same_v<T, float> ? 2e-5
                            : std::is_same_v<T, f16> ? 5e-3
                                                     : 2e-2;

size_t qkv_size(const AttentionShape& s) { return size_t(s.B * s.T * (s.H + 2 * s.KVH) * s.D); }
size_t out_size(const AttentionShape& s) { return size_t(s.B * s.T * s.H * s.D); }
size_t lse_size(const AttentionShape& s) { return size_t(s.B * s.H * s.T); }

std::string name(const AttentionShape& s) {
  std::ostringstream os;
  os << "B" << s.B << " T" << s.T << " H" << s.H << " KVH" << s.KVH << " D" << s.D;
  return os.str();
}

// Heads [first, first + heads) of every row of a qkv-layout array: the q, k or v part.
std::vector<float> part(const std::vector<float>& x, const AttentionShape& s, int64_t first, int64_t heads) {
  const int64_t ld = (s.H + 2 * s.KVH) * s.D;
  std::vector<float> out;
  for (int64_t row = 0; row < s.B * s.T; ++row)
    out.insert(out.end(), x.begin() + row * ld + first * s.D, x.begin() + row * ld + (first + heads) * s.D);
  return out;
}

// Largest |x|, infinite if any x is not finite.
double max_abs(const std::vector<float>& x) {
  double m = 0.0;
  for (float v : x) {
    if (!std::isfinite(v)) return INFINITY;
    m = std::max(m, double(std::fabs(v)));
  }
  return m;
}

// x with `offset` leading zeros: uploaded, its data starts `offset` elements into the buffer.
std::vector<float> shifted(const std::vector<float>& x, size_t offset) {
  std::vector<float> out(offset, 0.0f);
  out.insert(out.end(), x.begin(), x.end());
  return out;
}

// Forward and backward of one shape on the GPU against the CPU kernel. `offset` (elements)
// moves qkv and dqkv off 16-byte alignment, which sends bf16 and f16 to the scalar path.
template <typename T>
void check_against_cpu(const AttentionShape& s, const std::vector<int32_t>* key_begin = nullptr, size_t offset = 0) {
  const uint64_t seed = fresh_seed();
  std::ostringstream trace;
  trace << "seed " << seed << ", " << name(s) << (key_begin ? ", key_begin" : "") << (offset ? ", unaligned" : "");
  SCOPED_TRACE(trace.str());
  const std::vector<float> qkv = rounded<T>(random_floats(qkv_size(s), seed, -2.0f, 2.0f));
  const std::vector<float> dout = rounded<T>(random_floats(out_size(s), seed + 1));
  const int32_t* kb_host = key_begin ? key_begin->data() : nullptr;
  std::vector<float> scratch(kernels::cpu::attention_scratch_floats(s, 1));

  std::vector<float> out_ref(out_size(s)), lse_ref(lse_size(s));
  ASSERT_EQ(kernels::cpu::attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), s, scratch.data(),
                                            scratch.size(), kb_host),
            Status::kOk);
  DeviceArray<T> d_qkv(shifted(qkv, offset)), d_out(out_size(s));
  DeviceArray<float> d_lse(lse_size(s));
  DeviceArray<int32_t> d_kb(key_begin ? *key_begin : std::vector<int32_t>(1, 0));  // unused without a mask
  const int32_t* kb = key_begin ? d_kb.get() : nullptr;
  d_out.poison();
  d_lse.poison();
  ASSERT_EQ(
      kernels::cuda::attention_forward<T>(d_out.get(), d_lse.get(), d_qkv.get() + offset, s, nullptr, 0, kb, nullptr),
      Status::kOk);
  EXPECT_LT(rel_error(d_out.download(), out_ref), kOutTol<T>) << "out";
  EXPECT_LT(rel_error(d_lse.download(), lse_ref, 1.0), kLseTol<T>) << "lse";

  // Backward on identical inputs on both sides: the CPU's out (rounded through T) and lse.
  const std::vector<float> out_in = rounded<T>(out_ref);
  std::vector<float> dqkv_ref(qkv_size(s));
  ASSERT_EQ(kernels::cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), out_in.data(), lse_ref.data(), s,
                                             scratch.data(), scratch.size(), kb_host),
            Status::kOk);
  DeviceArray<T> d_dout(dout), d_out_in(out_in), d_dqkv(qkv_size(s) + offset);
  DeviceArray<float> d_lse_in(lse_ref);
  const size_t scratch_bytes = kernels::cuda::attention_scratch_bytes(s);
  DeviceArray<float> d_scratch(scratch_bytes / sizeof(float));
  auto backward = [&]() {
    d_dqkv.poison();
    d_scratch.poison();
    EXPECT_EQ(
        kernels::cuda::attention_backward<T>(d_dqkv.get() + offset, d_dout.get(), d_qkv.get() + offset, d_out_in.get(),
                                             d_lse_in.get(), s, d_scratch.get(), scratch_bytes, kb, nullptr),
        Status::kOk);
    std::vector<float> got = d_dqkv.download();
    return std::vector<float>(got.begin() + std::ptrdiff_t(offset), got.end());
  };
  const std::vector<float> dqkv = backward();
  if (s.T == 1) {
    // One key per query: the softmax has no gradient, dQ = dK = 0 exactly, and both sides
    // hold only the rounding noise of dP - delta (~1e-7), which no relative test can compare.
    EXPECT_LT(max_abs(part(dqkv, s, 0, s.H)), 1e-4) << "dq";
    EXPECT_LT(max_abs(part(dqkv, s, s.H, s.KVH)), 1e-4) << "dk";
  } else {
    EXPECT_LT(rel_error(part(dqkv, s, 0, s.H), part(dqkv_ref, s, 0, s.H)), kGradTol<T>) << "dq";
    EXPECT_LT(rel_error(part(dqkv, s, s.H, s.KVH), part(dqkv_ref, s, s.H, s.KVH)), kGradTol<T>) << "dk";
  }
  EXPECT_LT(rel_error(part(dqkv, s, s.H + s.KVH, s.KVH), part(dqkv_ref, s, s.H + s.KVH, s.KVH)), kGradTol<T>) << "dv";
  EXPECT_EQ(backward(), dqkv) << "backward is not bitwise repeatable";
  expect_device_clean();
}

// Per-query first keys as media segments make them, crossing the 64-row blocks, plus values
// past the query (clamped to it) and negative ones (clamped to 0).
std::vector<int32_t> segment_key_begin(const AttentionShape& s) {
  std::vector<int32_t> kb(size_t(s.B * s.T), 0);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t t = 0; t < s.T; ++t) {
      int32_t v;
      if (b % 2 == 0)
        v = t >= 10 && t < 75 ? 10 : (t >= 75 ? int32_t(t) : 0);  // a segment [10, 75)
      else
        v = t % 7 == 3 ? int32_t(t + 5) : (t % 11 == 0 ? -4 : int32_t(t / 3));
      kb[size_t(b * s.T + t)] = v;
    }
  }
  return kb;
}

template <typename T>
class CudaAttention : public ::testing::Test {};
TYPED_TEST_SUITE(CudaAttention, StorageTypes);

TYPED_TEST(CudaAttention, MatchesCpuOnShapes) {
  const AttentionShape shapes[] = {
      {1, 1, 1, 1, 64},     // a single position
      {2, 67, 4, 2, 64},    // GQA, ragged last tile
      {3, 64, 2, 2, 64},    // exactly one 64-row tile
      {1, 300, 2, 1, 64},   // MQA, many key tiles (online-softmax rescaling)
      {1, 130, 2, 1, 32},   // D = 32
      {2, 45, 3, 3, 16},    // D = 16
      {1, 100, 4, 2, 80},   // D = 80
      {1, 77, 2, 2, 96},    // D = 96
      {1, 150, 6, 2, 128},  // D = 128, group of 3
      {2, 50, 2, 1, 24},    // D not a multiple of 16: scalar path for bf16 and f16 too
      {1, 33, 4, 4, 7},     // odd D
  };
  for (const AttentionShape& s : shapes) check_against_cpu<TypeParam>(s);
}

TYPED_TEST(CudaAttention, KeyBeginMatchesCpu) {
  for (const AttentionShape s : {AttentionShape{2, 150, 4, 2, 64}, AttentionShape{2, 90, 4, 2, 24}}) {
    const std::vector<int32_t> segments = segment_key_begin(s);
    check_against_cpu<TypeParam>(s, &segments);
    const std::vector<int32_t> random = random_ints(size_t(s.B * s.T), fresh_seed(), -5, int32_t(s.T) + 5);
    check_against_cpu<TypeParam>(s, &random);
  }
}

// Rows off 16-byte alignment take the scalar path; the result must not change.
TYPED_TEST(CudaAttention, UnalignedRowsMatchCpu) {
  const AttentionShape s{2, 70, 4, 2, 64};
  check_against_cpu<TypeParam>(s, nullptr, 1);
  const std::vector<int32_t> segments = segment_key_begin(s);
  check_against_cpu<TypeParam>(s, &segments, 1);
}

TYPED_TEST(CudaAttention, RejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> buf(4096);
  DeviceArray<float> lse(4096);
  T* p = buf.get();
  const AttentionShape bad_group{1, 4, 3, 2, 16};  // H % KVH != 0
  EXPECT_EQ(kernels::cuda::attention_scratch_bytes(bad_group), 0u);
  EXPECT_EQ(kernels::cuda::attention_forward<T>(p, lse.get(), p, bad_group, nullptr, 0, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_forward<T>(p, lse.get(), p, AttentionShape{1, 0, 2, 1, 16}, nullptr, 0, nullptr,
                                                nullptr),
            Status::kInvalidArgument);

  const AttentionShape s{1, 4, 2, 1, 16};
  const size_t need = kernels::cuda::attention_scratch_bytes(s);
  ASSERT_EQ(need, size_t(s.B * s.H * s.T) * sizeof(float));
  EXPECT_EQ(kernels::cuda::attention_forward<T>(nullptr, lse.get(), p, s, nullptr, 0, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_forward<T>(p, nullptr, p, s, nullptr, 0, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_backward<T>(p, p, p, p, lse.get(), s, lse.get(), need - 1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_backward<T>(p, p, p, p, lse.get(), s, nullptr, need, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(kernels::cuda::attention_backward<T>(p, nullptr, p, p, lse.get(), s, lse.get(), need, nullptr, nullptr),
            Status::kInvalidArgument);

  const AttentionShape wide{1, 4, 1, 1, 129};  // D past the largest supported head dim
  EXPECT_EQ(kernels::cuda::attention_forward<T>(p, lse.get(), p, wide, nullptr, 0, nullptr, nullptr),
            Status::kNotSupported);
  EXPECT_EQ(kernels::cuda::attention_backward<T>(p, p, p, p, lse.get(), wide, lse.get(),
                                                 kernels::cuda::attention_scratch_bytes(wide), nullptr, nullptr),
            Status::kNotSupported);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
