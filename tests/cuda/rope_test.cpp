// CUDA RoPE against kernels/cpu/rope: the table (device double math, equal to the CPU's to
// about the last bit) and rope_apply in place, forward and inverse, for float, bf16 and f16, on
// heads inside fused qkv rows (row_stride > n_heads * D, x past the row start), a table
// longer than seq, D = 2, and layouts that take the element path; bad arguments.
#include "kernels/cpu/rope.h"

#include "kernels/cuda/rope.cuh"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

using kernels::Status;
namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

TEST(CudaRope, TableMatchesCpu) {
  const int64_t shapes[][2] = {{1, 2}, {7, 6}, {2048, 64}, {4097, 128}};
  for (const auto& s : shapes) {
    for (float theta : {10000.0f, 500000.0f}) {
      const int64_t positions = s[0], D = s[1];
      SCOPED_TRACE("positions " + std::to_string(positions) + " D " + std::to_string(D) + " theta " +
                   std::to_string(theta));
      const size_t len = size_t(positions * D);
      DeviceArray<float> d_table(len);
      d_table.poison();
      ASSERT_EQ(gpu::rope_table(d_table.get(), positions, D, theta, nullptr), Status::kOk);
      std::vector<float> table(len);
      ASSERT_EQ(cpu::rope_table(table.data(), positions, D, theta), Status::kOk);
      const auto got = d_table.download();
      EXPECT_LT(rel_error(got, table), 1e-6);
      float worst = 0.0f;  // device and host double libm may differ in the last double bit only
      for (size_t i = 0; i < len; ++i) worst = std::max(worst, std::fabs(got[i] - table[i]));
      EXPECT_LE(worst, 1.2e-7f);  // one float ulp of a value <= 1
    }
  }
  expect_device_clean();
}

template <typename T>
class CudaRopeApply : public ::testing::Test {};
TYPED_TEST_SUITE(CudaRopeApply, StorageTypes);

struct Layout {
  int64_t B, seq, n_heads, D, row_stride, first;  // first: offset of x in the row
};

TYPED_TEST(CudaRopeApply, MatchesCpuInFusedRows) {
  using T = TypeParam;
  const Layout layouts[] = {
      {1, 1, 1, 2, 2, 0},              // smallest head
      {2, 5, 3, 64, 3 * 3 * 64, 192},  // k heads of a fused qkv row (vectorised path)
      {3, 7, 2, 128, 2 * 128 + 8, 8},  // row_stride with slack
      {2, 9, 4, 6, 4 * 6 + 1, 1},      // odd stride, odd offset: element path
      {1, 33, 12, 64, 3 * 12 * 64, 0},
  };
  for (const Layout& l : layouts) {
    for (bool inverse : {false, true}) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " B " + std::to_string(l.B) + " seq " + std::to_string(l.seq) +
                   " heads " + std::to_string(l.n_heads) + " D " + std::to_string(l.D) + " stride " +
                   std::to_string(l.row_stride) + " first " + std::to_string(l.first) +
                   (inverse ? " inverse" : " forward"));
      const int64_t positions = l.seq + 3;  // the table may hold more positions than seq
      std::vector<float> table(size_t(positions * l.D));
      ASSERT_EQ(cpu::rope_table(table.data(), positions, l.D, 10000.0f), Status::kOk);
      auto x = rounded<T>(random_floats(size_t(l.B * l.seq * l.row_stride), seed, -2.0f, 2.0f));
      DeviceArray<T> d_x(x);
      DeviceArray<float> d_table(table);
      ASSERT_EQ(gpu::rope_apply(d_x.get() + l.first, d_table.get(), l.B, l.seq, l.n_heads, l.D, l.row_stride, inverse,
                                nullptr),
                Status::kOk);
      ASSERT_EQ(cpu::rope_apply(x.data() + l.first, table.data(), l.B, l.seq, l.n_heads, l.D, l.row_stride, inverse),
                Status::kOk);
      const auto got = d_x.download();
      EXPECT_LT(rel_error(got, x), tolerance<T>());  // the whole buffer: other heads untouched
      for (int64_t r = 0; r < l.B * l.seq; ++r) {
        for (int64_t c = 0; c < l.row_stride; ++c) {
          const bool rotated = c >= l.first && c < l.first + l.n_heads * l.D;
          const size_t i = size_t(r * l.row_stride + c);
          if (!rotated) {
            ASSERT_EQ(got[i], x[i]) << "row " << r << " col " << c;
          }
        }
      }
    }
  }
  expect_device_clean();
}

TYPED_TEST(CudaRopeApply, InverseUndoesForward) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t B = 2, seq = 17, H = 4, D = 32, stride = H * D;
  DeviceArray<float> d_table(size_t(seq * D));
  ASSERT_EQ(gpu::rope_table(d_table.get(), seq, D, 10000.0f, nullptr), Status::kOk);
  const auto x = rounded<T>(random_floats(size_t(B * seq * stride), seed));
  DeviceArray<T> d_x(x);
  ASSERT_EQ(gpu::rope_apply(d_x.get(), d_table.get(), B, seq, H, D, stride, false, nullptr), Status::kOk);
  ASSERT_EQ(gpu::rope_apply(d_x.get(), d_table.get(), B, seq, H, D, stride, true, nullptr), Status::kOk);
  EXPECT_LT(rel_error(d_x.download(), x), 2 * tolerance<T>());  // two roundings for bf16 and f16
  expect_device_clean();
}

TEST(CudaRope, RejectsBadArguments) {
  DeviceArray<float> t(std::vector<float>(64, 0.5f));
  DeviceArray<bf16> x(std::vector<float>(64, 1.0f));
  EXPECT_EQ(gpu::rope_table(t.get(), 4, 3, 10000.0f, nullptr), Status::kInvalidArgument);  // odd D
  EXPECT_EQ(gpu::rope_table(t.get(), 4, 0, 10000.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_table(t.get(), -1, 4, 10000.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_table(t.get(), 4, 4, 0.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_table(nullptr, 4, 4, 10000.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_table(nullptr, 0, 4, 10000.0f, nullptr), Status::kOk);
  EXPECT_EQ(gpu::rope_apply(x.get(), t.get(), 1, 2, 2, 4, 7, false, nullptr), Status::kInvalidArgument);   // stride
  EXPECT_EQ(gpu::rope_apply(x.get(), t.get(), 1, 2, 2, 5, 10, false, nullptr), Status::kInvalidArgument);  // odd D
  EXPECT_EQ(gpu::rope_apply(x.get(), t.get(), -1, 2, 2, 4, 8, false, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_apply(x.get(), nullptr, 1, 2, 2, 4, 8, false, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_apply<bf16>(nullptr, t.get(), 1, 2, 2, 4, 8, false, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(gpu::rope_apply(x.get(), t.get(), 1, 2, 0, 4, 8, false, nullptr), Status::kOk);  // no heads
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
