// CUDA token (+ position) embedding against kernels/cpu/embedding on the same rounded
// inputs, for float, bf16 and f16: forward with and without wpe and on vocabulary slices
// (including an empty one); backward += onto random dwte/dwpe with repeated and skewed ids,
// several id tiles, column blocks and vocabulary buckets, bitwise the same on a second run;
// bad ids raise the device flag, read nothing out of bounds, give zero rows / no gradient.
#include "kernels/cpu/embedding.h"

#include <algorithm>

#include "kernels/cuda/embedding.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

// Fp32 gradients from the same inputs differ by summation order only.
constexpr double kFp32Tolerance = 1e-5;

template <typename T>
class CudaEmbedding : public ::testing::Test {};
TYPED_TEST_SUITE(CudaEmbedding, StorageTypes);

struct Case {
  int64_t B, seq, C, V, v_begin, v_count;  // v_count >= 0 here (the slice's rows)
  bool wpe;
  bool skewed;  // about half the ids the same token
  std::string name() const {
    return "B " + std::to_string(B) + " seq " + std::to_string(seq) + " C " + std::to_string(C) + " V " +
           std::to_string(V) + " slice " + std::to_string(v_begin) + "+" + std::to_string(v_count) +
           (wpe ? " wpe" : "") + (skewed ? " skewed" : "");
  }
};

const Case kCases[] = {
    {1, 1, 1, 1, 0, 1, true, false},              // smallest
    {2, 3, 37, 7, 0, 7, true, false},             // odd C: element path; many repeats
    {3, 5, 64, 50, 0, 50, false, false},          // vectorised, two vocabulary buckets
    {4, 129, 300, 100, 0, 100, true, true},       // 516 rows: three id tiles; two column blocks
    {2, 200, 1024, 1000, 300, 400, true, false},  // a vocabulary slice
    {1, 64, 768, 97, 97, 0, true, false},         // an empty slice at the end
    {8, 64, 128, 3, 0, 3, false, true},           // everything in one bucket, long hit lists
};

std::vector<int32_t> make_ids(const Case& k, uint64_t seed) {
  auto ids = random_ints(size_t(k.B * k.seq), seed, 0, int32_t(k.V - 1));
  if (k.skewed) {
    for (size_t i = 0; i < ids.size(); i += 2) ids[i] = int32_t(k.V / 2);
  }
  return ids;
}

TYPED_TEST(CudaEmbedding, ForwardMatchesCpu) {
  using T = TypeParam;
  for (const Case& k : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + k.name());
    const int64_t N = k.B * k.seq;
    const auto ids = make_ids(k, seed);
    // One spare row so that an empty slice still has a valid (unread) pointer.
    const auto wte = rounded<T>(random_floats(size_t(std::max<int64_t>(k.v_count, 1) * k.C), seed + 1));
    const auto wpe = rounded<T>(random_floats(size_t((k.seq + 2) * k.C), seed + 2));  // P > seq
    DeviceArray<int32_t> d_ids(ids);
    DeviceArray<int32_t> d_bad(std::vector<int32_t>{0});
    DeviceArray<T> d_wte(wte), d_wpe(wpe), d_out(size_t(N * k.C));
    d_out.poison();
    ASSERT_EQ(gpu::embedding_forward(d_out.get(), d_ids.get(), d_wte.get(), k.wpe ? d_wpe.get() : nullptr, N, k.seq,
                                     k.C, k.V, k.v_begin, k.v_count, d_bad.get(), nullptr),
              Status::kOk);
    std::vector<float> out(size_t(N * k.C));
    ASSERT_EQ(cpu::embedding_forward(out.data(), ids.data(), wte.data(), k.wpe ? wpe.data() : nullptr, N, k.seq, k.C,
                                     k.V, k.v_begin, k.v_count),
              Status::kOk);
    EXPECT_LT(rel_error(d_out.download(), out), tolerance<T>());
    EXPECT_EQ(d_bad.download()[0], 0);
  }
  expect_device_clean();
}

TYPED_TEST(CudaEmbedding, BackwardAccumulatesLikeCpu) {
  using T = TypeParam;
  for (const Case& k : kCases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + k.name());
    const int64_t N = k.B * k.seq;
    const auto ids = make_ids(k, seed);
    const auto dout = rounded<T>(random_floats(size_t(N * k.C), seed + 1));
    const auto dwte0 = random_floats(size_t(std::max<int64_t>(k.v_count, 1) * k.C), seed + 2);
    const auto dwpe0 = random_floats(size_t((k.seq + 2) * k.C), seed + 3);
    DeviceArray<int32_t> d_ids(ids);
    DeviceArray<int32_t> d_bad(std::vector<int32_t>{0});
    DeviceArray<T> d_dout(dout);
    DeviceArray<float> d_dwte(dwte0), d_dwpe(dwpe0), d_dwte2(dwte0), d_dwpe2(dwpe0);
    for (int run = 0; run < 2; ++run) {
      float* dwte = run == 0 ? d_dwte.get() : d_dwte2.get();
      float* dwpe = k.wpe ? (run == 0 ? d_dwpe.get() : d_dwpe2.get()) : nullptr;
      ASSERT_EQ(gpu::embedding_backward(dwte, dwpe, d_dout.get(), d_ids.get(), N, k.seq, k.C, k.V, k.v_begin, k.v_count,
                                        d_bad.get(), nullptr),
                Status::kOk);
    }
    std::vector<float> dwte = dwte0, dwpe = dwpe0;
    ASSERT_EQ(cpu::embedding_backward(dwte.data(), k.wpe ? dwpe.data() : nullptr, dout.data(), ids.data(), N, k.seq,
                                      k.C, k.V, k.v_begin, k.v_count),
              Status::kOk);
    const auto got_wte = d_dwte.download(), got_wpe = d_dwpe.download();
    EXPECT_LT(rel_error(got_wte, dwte), kFp32Tolerance);
    EXPECT_LT(rel_error(got_wpe, dwpe), kFp32Tolerance);  // dwpe0 itself without wpe
    EXPECT_EQ(got_wte, d_dwte2.download());               // deterministic
    EXPECT_EQ(got_wpe, d_dwpe2.download());
    EXPECT_EQ(d_bad.download()[0], 0);
  }
  expect_device_clean();
}

// Rows 1 and 4 hold ids -1 and V: the flag is raised, their output rows are zero (no wpe),
// they add nothing to dwte (dwpe still receives them); every other row is as on the CPU.
TYPED_TEST(CudaEmbedding, BadIdsRaiseTheFlag) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t B = 2, seq = 3, N = B * seq, C = 70, V = 40, v_begin = 1, v_count = V - 1;
  auto ids = random_ints(size_t(N), seed, 1, int32_t(V - 1));
  std::vector<int32_t> bad_ids = ids;
  bad_ids[1] = -1;
  bad_ids[4] = int32_t(V);
  ids[1] = ids[4] = 0;  // for the CPU reference: id 0 lies outside the slice
  const auto wte = rounded<T>(random_floats(size_t(v_count * C), seed + 1));
  const auto wpe = rounded<T>(random_floats(size_t(seq * C), seed + 2));
  const auto dout = rounded<T>(random_floats(size_t(N * C), seed + 3));
  const auto dwte0 = random_floats(size_t(v_count * C), seed + 4), dwpe0 = random_floats(size_t(seq * C), seed + 5);
  DeviceArray<int32_t> d_ids(bad_ids), d_flag_fwd(std::vector<int32_t>{0}), d_flag_bwd(std::vector<int32_t>{0});
  DeviceArray<T> d_wte(wte), d_wpe(wpe), d_dout(dout), d_out(size_t(N * C));
  DeviceArray<float> d_dwte(dwte0), d_dwpe(dwpe0);
  d_out.poison();
  ASSERT_EQ(gpu::embedding_forward(d_out.get(), d_ids.get(), d_wte.get(), d_wpe.get(), N, seq, C, V, v_begin, v_count,
                                   d_flag_fwd.get(), nullptr),
            Status::kOk);
  ASSERT_EQ(gpu::embedding_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_ids.get(), N, seq, C, V, v_begin,
                                    v_count, d_flag_bwd.get(), nullptr),
            Status::kOk);
  ASSERT_EQ(gpu::embedding_forward(d_out.get(), d_ids.get(), d_wte.get(), d_wpe.get(), N, seq, C, V, v_begin, v_count,
                                   nullptr, nullptr),
            Status::kOk);  // no flag: still safe
  EXPECT_EQ(d_flag_fwd.download()[0], 1);
  EXPECT_EQ(d_flag_bwd.download()[0], 1);

  std::vector<float> out(size_t(N * C)), dwte = dwte0, dwpe = dwpe0;
  ASSERT_EQ(cpu::embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), N, seq, C, V, v_begin, v_count),
            Status::kOk);
  ASSERT_EQ(cpu::embedding_backward(dwte.data(), dwpe.data(), dout.data(), ids.data(), N, seq, C, V, v_begin, v_count),
            Status::kOk);
  for (int64_t n : {1, 4}) std::fill(out.begin() + n * C, out.begin() + (n + 1) * C, 0.0f);
  EXPECT_LT(rel_error(d_out.download(), out), tolerance<T>());
  EXPECT_LT(rel_error(d_dwte.download(), dwte), kFp32Tolerance);
  EXPECT_LT(rel_error(d_dwpe.download(), dwpe), kFp32Tolerance);
  expect_device_clean();
}

TYPED_TEST(CudaEmbedding, RejectsBadArguments) {
  using T = TypeParam;
  DeviceArray<T> w(std::vector<float>(64, 1.0f));
  DeviceArray<float> g(std::vector<float>(64, 1.0f));
  DeviceArray<int32_t> ids(std::vector<int32_t>(4, 0));
  // N % seq != 0, seq = 0, negative C, a slice past V, null pointers.
  EXPECT_EQ(gpu::embedding_forward(w.get(), ids.get(), w.get(), w.get(), 4, 3, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward(w.get(), ids.get(), w.get(), w.get(), 4, 0, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward(w.get(), ids.get(), w.get(), w.get(), 4, 2, -4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward(w.get(), ids.get(), w.get(), w.get(), 4, 2, 4, 4, 3, 2, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward<T>(w.get(), nullptr, w.get(), w.get(), 4, 2, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward<T>(w.get(), ids.get(), nullptr, w.get(), 4, 2, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_forward<T>(nullptr, nullptr, nullptr, nullptr, 0, 2, 4, 4, 0, -1, nullptr, nullptr),
            Status::kOk);  // empty
  EXPECT_EQ(gpu::embedding_backward(g.get(), g.get(), w.get(), ids.get(), 4, 3, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_backward(g.get(), g.get(), w.get(), ids.get(), 4, 2, 4, 4, -1, 2, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_backward<T>(nullptr, g.get(), w.get(), ids.get(), 4, 2, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(gpu::embedding_backward<T>(g.get(), g.get(), nullptr, ids.get(), 4, 2, 4, 4, 0, -1, nullptr, nullptr),
            Status::kInvalidArgument);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
