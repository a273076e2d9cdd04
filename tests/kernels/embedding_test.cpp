// kernels/cpu/embedding: forward lookup (with and without learned positions), backward as
// the finite-difference gradient w.r.t. wte and wpe, += accumulation, bitwise equality of
// the backward for 1 and 2 threads with repeated ids, vocabulary slices (tensor
// parallelism: the slices' lookups and gradients add up to the whole table's), and
// out-of-range / bad arguments.
#include "kernels/cpu/embedding.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

std::vector<int32_t> random_ids(int64_t N, int64_t V, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(V - 1));
  std::vector<int32_t> ids(static_cast<size_t>(N));
  for (auto& id : ids) id = pick(gen);
  return ids;
}

TEST(Embedding, ForwardLooksUpTokenAndPosition) {
  const int64_t B = 2, T = 3, C = 5, V = 7, N = B * T;
  std::vector<int32_t> ids = {6, 0, 3, 3, 1, 6};
  auto wte = random_vector(size_t(V * C), 1);
  auto wpe = random_vector(size_t(4 * C), 2);  // P = 4 > T
  std::vector<float> out(size_t(N * C), -1.0f);
  ASSERT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), N, T, C, V),
            Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      EXPECT_EQ(out[n * C + c], wte[ids[n] * C + c] + wpe[(n % T) * C + c]) << n << "," << c;
    }
  }
  ASSERT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), nullptr, N, T, C, V),
            Status::kOk);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[n * C + c], wte[ids[n] * C + c]);
  }
}

TEST(Embedding, VocabularySlicesAddUpToTheWholeTable) {
  const int64_t T = 4, N = 12, C = 3, V = 9, parts = 3, Vl = V / parts;
  const std::vector<int32_t> ids = random_ids(N, V, 5);
  auto wte = random_vector(size_t(V * C), 6);
  auto dout = random_vector(size_t(N * C), 7);
  std::vector<float> whole(size_t(N * C)), sum(size_t(N * C), 0.0f), part(size_t(N * C));
  std::vector<float> dwte(size_t(V * C), 0.0f), dslices(size_t(V * C), 0.0f);
  ASSERT_EQ(embedding_forward(whole.data(), ids.data(), wte.data(), nullptr, N, T, C, V), Status::kOk);
  ASSERT_EQ(embedding_backward(dwte.data(), nullptr, dout.data(), ids.data(), N, T, C, V), Status::kOk);
  for (int64_t r = 0; r < parts; ++r) {
    const float* slice = wte.data() + r * Vl * C;
    ASSERT_EQ(embedding_forward(part.data(), ids.data(), slice, nullptr, N, T, C, V, r * Vl, Vl), Status::kOk);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];  // one non-zero term per row
    ASSERT_EQ(embedding_backward(dslices.data() + r * Vl * C, nullptr, dout.data(), ids.data(), N, T, C, V, r * Vl, Vl),
              Status::kOk);
  }
  EXPECT_EQ(sum, whole);
  EXPECT_EQ(dslices, dwte);
  EXPECT_EQ(embedding_forward(part.data(), ids.data(), wte.data(), nullptr, N, T, C, V, 7, 3),
            Status::kInvalidArgument);  // a slice past the vocabulary
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t B = 3, T = 4, C = 40, V = 5, N = B * T;  // C spans two channel blocks
  auto ids = random_ids(N, V, 3);
  auto wte = random_vector(size_t(V * C), 4);
  auto wpe = random_vector(size_t(T * C), 5);
  auto r = random_vector(size_t(N * C), 6);
  auto loss = [&] {
    std::vector<float> out(size_t(N * C));
    EXPECT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), N, T, C, V),
              Status::kOk);
    return probe(out, r);
  };
  std::vector<float> dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
  ASSERT_EQ(embedding_backward(dwte.data(), dwpe.data(), r.data(), ids.data(), N, T, C, V),
            Status::kOk);
  expect_gradient_matches(wte, dwte, loss, "dwte", 48);
  expect_gradient_matches(wpe, dwpe, loss, "dwpe", 48);
}

TEST(Embedding, BackwardAccumulatesAndSkipsNullPositionGrad) {
  const int64_t T = 2, C = 3, V = 2, N = 4;
  std::vector<int32_t> ids = {1, 1, 0, 1};
  std::vector<float> dout(size_t(N * C));
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = float(i);
  std::vector<float> dwte(size_t(V * C), 100.0f);
  ASSERT_EQ(embedding_backward(dwte.data(), nullptr, dout.data(), ids.data(), N, T, C, V),
            Status::kOk);
  // Row 0 gets dout row 2; row 1 gets rows 0, 1 and 3.
  EXPECT_EQ(dwte, (std::vector<float>{106, 107, 108, 100 + 0 + 3 + 9, 100 + 1 + 4 + 10,
                                      100 + 2 + 5 + 11}));
}

TEST(Embedding, BackwardIsBitwiseIndependentOfThreads) {
  const int64_t B = 8, T = 64, C = 96, V = 11, N = B * T;  // few ids, many collisions
  auto ids = random_ids(N, V, 7);
  auto dout = random_vector(size_t(N * C), 8);
  const int before = num_threads();
  std::vector<std::vector<float>> wte_grads, wpe_grads;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<float> dwte(size_t(V * C), 0.5f), dwpe(size_t(T * C), 0.25f);
    ASSERT_EQ(embedding_backward(dwte.data(), dwpe.data(), dout.data(), ids.data(), N, T, C, V),
              Status::kOk);
    wte_grads.push_back(dwte);
    wpe_grads.push_back(dwpe);
  }
  set_num_threads(before);
  EXPECT_EQ(wte_grads[0], wte_grads[1]);
  EXPECT_EQ(wpe_grads[0], wpe_grads[1]);
}

TEST(Embedding, OutOfRangeIdsAreRejected) {
  const int64_t T = 2, C = 3, V = 4, N = 2;
  std::vector<float> wte(size_t(V * C), 1.0f), out(size_t(N * C), 0.0f);
  for (int32_t bad : {4, -1, 1000}) {
    std::vector<int32_t> ids = {0, bad};
    EXPECT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), nullptr, N, T, C, V),
              Status::kOutOfRange);
    EXPECT_EQ(embedding_backward(wte.data(), nullptr, out.data(), ids.data(), N, T, C, V),
              Status::kOutOfRange);
  }
  EXPECT_EQ(wte, std::vector<float>(size_t(V * C), 1.0f)) << "backward wrote before failing";
}

TEST(Embedding, RejectsBadArguments) {
  std::vector<int32_t> ids = {0, 1, 0};
  std::vector<float> wte(8, 0.0f), out(12, 0.0f);
  // N not a multiple of T, T <= 0, null pointers.
  EXPECT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), nullptr, 3, 2, 4, 2),
            Status::kInvalidArgument);
  EXPECT_EQ(embedding_forward(out.data(), ids.data(), wte.data(), nullptr, 3, 0, 4, 2),
            Status::kInvalidArgument);
  EXPECT_EQ(embedding_forward(out.data(), nullptr, wte.data(), nullptr, 3, 3, 4, 2),
            Status::kInvalidArgument);
  EXPECT_EQ(embedding_backward(nullptr, nullptr, out.data(), ids.data(), 3, 3, 4, 2),
            Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
