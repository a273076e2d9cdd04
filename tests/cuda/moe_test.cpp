// CUDA MoE kernels against kernels/cpu/moe on the same fresh inputs: router top-k (exact
// expert ids, ties included) and its backward, balance / z losses (split batch too), counts,
// the dispatch plan (every integer output bit-equal: dropless, capacity, zero capacity,
// `before`, k = 1 and 2, E = 8 and 64, empty experts, multi-chunk sizes), the permute /
// combine gathers for float, bf16 and f16 rows, and argument checks.
#include "kernels/cuda/moe.cuh"

#include <algorithm>
#include <numeric>
#include <string>

#include "kernels/cpu/moe.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;
using kernels::Status;
using VF = std::vector<float>;
using VI = std::vector<int32_t>;
using VL = std::vector<int64_t>;

// Logits with distinct levels 0.05 apart per row (probs differ by >= 5%, far beyond rounding),
// plus exact ties: in every third row another expert copies the top logit, in the next the
// k-th largest, so both the order and the cut at k resolve ties to the lower index.
VF router_logits(int64_t N, int64_t E, int64_t k, uint64_t seed) {
  std::mt19937_64 gen(seed);
  VF x(size_t(N * E));
  std::vector<int> perm(E > 0 ? size_t(E) : 0);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    float* row = x.data() + n * E;
    for (int64_t e = 0; e < E; ++e) row[e] = 0.05f * float(perm[size_t(e)]) - 1.0f;
    if (E < 2 || n % 3 == 0) continue;
    const int rank = n % 3 == 1 ? 0 : int(k) - 1;  // copy the (rank+1)-th largest
    const int64_t src = std::find(perm.begin(), perm.end(), int(E) - 1 - rank) - perm.begin();
    int64_t dst = int64_t(gen() % uint64_t(E));
    if (dst == src) dst = (dst + 1) % E;
    row[dst] = row[src];
  }
  return x;
}

struct Routed {
  VF probs, gate;
  VI expert;
};
Routed cpu_route(const VF& logits, int64_t N, int64_t E, int64_t k, bool renormalize) {
  Routed r{VF(size_t(N * E)), VF(size_t(N * k)), VI(size_t(N * k))};
  EXPECT_EQ(cpu::router_topk(logits.data(), N, E, k, renormalize, r.probs.data(), r.expert.data(), r.gate.data()),
            Status::kOk);
  return r;
}

// Expert ids drawn with uneven weights; experts 3, 7, 11, ... get none. distinct: a token's
// choices differ (as from the router); otherwise repeats are allowed (the plan must order them).
VI skewed_experts(int64_t N, int64_t E, int64_t k, uint64_t seed, bool distinct = true) {
  std::mt19937_64 gen(seed);
  std::vector<double> w(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) w[size_t(e)] = e % 4 == 3 ? 0.0 : 1.0 + double(e % 5);
  std::discrete_distribution<int> pick(w.begin(), w.end());
  VI ex(size_t(N * k));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < k; ++j) {
      int e = pick(gen);
      while (distinct && std::find(ex.begin() + n * k, ex.begin() + n * k + j, e) != ex.begin() + n * k + j)
        e = pick(gen);
      ex[size_t(n * k + j)] = e;
    }
  }
  return ex;
}

// Device copies hold at least one element (an empty host vector gives one unused zero).
template <typename I>
std::vector<I> nonempty(std::vector<I> v) {
  if (v.empty()) v.push_back(I{});
  return v;
}

// ---------------------------------------------------------------- router

TEST(CudaMoeRouter, TopkMatchesCpuWithTies) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{8, 1}, {8, 2}, {64, 1}, {64, 2}, {5, 3}, {100, 4}};
  for (auto [E, k] : shapes) {
    for (int64_t N : {1, 333}) {
      for (bool renormalize : {false, true}) {
        SCOPED_TRACE("E " + std::to_string(E) + " k " + std::to_string(k) + " N " + std::to_string(N) +
                     (renormalize ? " renormalized" : ""));
        const VF logits = router_logits(N, E, k, seed + uint64_t(E * 7 + k + N));
        const Routed want = cpu_route(logits, N, E, k, renormalize);
        DeviceArray<float> d_logits(logits), d_probs(size_t(N * E)), d_gate(size_t(N * k));
        DeviceArray<int32_t> d_expert(size_t(N * k));
        d_probs.poison();
        d_gate.poison();
        d_expert.poison();
        ASSERT_EQ(gpu::router_topk(d_logits.get(), N, E, k, renormalize, d_probs.get(), d_expert.get(), d_gate.get(),
                                   nullptr),
                  Status::kOk);
        EXPECT_EQ(d_expert.download(), want.expert);
        EXPECT_LT(rel_error(d_probs.download(), want.probs), 1e-5);
        EXPECT_LT(rel_error(d_gate.download(), want.gate), 1e-5);
      }
    }
  }
  expect_device_clean();
}

TEST(CudaMoeRouter, BackwardMatchesCpu) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (auto [E, k] : std::vector<std::pair<int64_t, int64_t>>{{8, 1}, {8, 2}, {64, 2}, {100, 4}}) {
    for (bool renormalize : {false, true}) {
      for (bool extra : {false, true}) {
        const int64_t N = 333;
        SCOPED_TRACE("E " + std::to_string(E) + " k " + std::to_string(k) + (renormalize ? " renormalized" : "") +
                     (extra ? " dprobs_extra" : ""));
        const VF logits = router_logits(N, E, k, seed + uint64_t(E + k));
        const Routed r = cpu_route(logits, N, E, k, renormalize);
        const VF dgate = random_floats(size_t(N * k), seed + 1);
        const VF dextra = random_floats(size_t(N * E), seed + 2, -0.1f, 0.1f);
        VF want(size_t(N * E));
        ASSERT_EQ(cpu::router_topk_backward(r.probs.data(), r.expert.data(), r.gate.data(), dgate.data(),
                                            extra ? dextra.data() : nullptr, N, E, k, renormalize, want.data()),
                  Status::kOk);
        DeviceArray<float> d_probs(r.probs), d_gate(r.gate), d_dgate(dgate), d_extra(dextra), d_out(size_t(N * E));
        DeviceArray<int32_t> d_expert(r.expert);
        d_out.poison();
        ASSERT_EQ(
            gpu::router_topk_backward(d_probs.get(), d_expert.get(), d_gate.get(), d_dgate.get(),
                                      extra ? d_extra.get() : nullptr, N, E, k, renormalize, d_out.get(), nullptr),
            Status::kOk);
        EXPECT_LT(rel_error(d_out.download(), want), 1e-5);
      }
    }
  }
  expect_device_clean();
}

// ---------------------------------------------------------------- counts and losses

double loss_error(double got, double want) { return std::abs(got - want) / std::max(std::abs(want), 1e-300); }

TEST(CudaMoeLoss, BalanceLossMatchesCpu) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (auto [E, k] : std::vector<std::pair<int64_t, int64_t>>{{8, 1}, {8, 2}, {64, 2}}) {
    for (int64_t N : {1, 333, 5000}) {
      // variant 0: counts + dprobs; 1: neither; 2: split batch (N_total, group_counts) with counts copied.
      for (int variant = 0; variant < 3; ++variant) {
        SCOPED_TRACE("E " + std::to_string(E) + " k " + std::to_string(k) + " N " + std::to_string(N) + " variant " +
                     std::to_string(variant));
        const Routed r = cpu_route(random_floats(size_t(N * E), seed + uint64_t(N), -2.0f, 2.0f), N, E, k, k >= 2);
        const VF dprobs0 = random_floats(size_t(N * E), seed + 3);
        const bool with_dprobs = variant != 1, with_counts = variant != 1, split = variant == 2;
        const int64_t N_total = split ? 3 * N : 0;
        VL group(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) group[size_t(e)] = int64_t((seed >> (e % 32)) % 97) + e;
        const float scale = 0.37f;
        VF want_d = dprobs0;
        VL want_counts(size_t(E), -7);
        double want_loss = 0.0;
        ASSERT_EQ(
            cpu::moe_balance_loss(r.probs.data(), r.expert.data(), N, E, k, &want_loss, scale,
                                  with_dprobs ? want_d.data() : nullptr, with_counts ? want_counts.data() : nullptr,
                                  N_total, split ? group.data() : nullptr),
            Status::kOk);
        DeviceArray<float> d_probs(r.probs), d_d(dprobs0);
        DeviceArray<int32_t> d_expert(r.expert);
        DeviceArray<int64_t> d_counts(static_cast<size_t>(E)), d_group(group);
        DeviceArray<double> d_loss(1), d_scratch(gpu::moe_loss_scratch_bytes(E) / sizeof(double));
        d_counts.poison();
        d_loss.poison();
        d_scratch.poison();
        ASSERT_EQ(gpu::moe_balance_loss(d_probs.get(), d_expert.get(), N, E, k, d_loss.get(), scale,
                                        with_dprobs ? d_d.get() : nullptr, with_counts ? d_counts.get() : nullptr,
                                        N_total, split ? d_group.get() : nullptr, d_scratch.get(),
                                        gpu::moe_loss_scratch_bytes(E), nullptr),
                  Status::kOk);
        EXPECT_LT(loss_error(d_loss.download()[0], want_loss), 1e-12);
        if (with_counts) {
          EXPECT_EQ(d_counts.download(), want_counts);
        }
        if (with_dprobs) {
          EXPECT_LT(rel_error(d_d.download(), want_d), 1e-6);
        }
      }
    }
  }
  expect_device_clean();
}

TEST(CudaMoeLoss, CountAssignmentsMatchCpu) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // (E, k): E = 7000, k = 2 exceeds the shared-memory histogram (global atomics path).
  for (auto [E, k] : std::vector<std::pair<int64_t, int64_t>>{{8, 1}, {8, 2}, {64, 2}, {7000, 2}}) {
    for (int64_t N : {0, 1, 777, 5000}) {
      SCOPED_TRACE("E " + std::to_string(E) + " k " + std::to_string(k) + " N " + std::to_string(N));
      const VI expert = random_ints(size_t(N * k), seed + uint64_t(N), 0, int32_t(E - 1));
      VL want(size_t(k * E));
      ASSERT_EQ(cpu::moe_count_assignments(expert.data(), N, E, k, want.data()), Status::kOk);
      DeviceArray<int32_t> d_expert(nonempty(expert));
      DeviceArray<int64_t> d_counts(size_t(k * E));
      d_counts.poison();
      ASSERT_EQ(gpu::moe_count_assignments(d_expert.get(), N, E, k, d_counts.get(), nullptr), Status::kOk);
      EXPECT_EQ(d_counts.download(), want);
    }
  }
  expect_device_clean();
}

TEST(CudaMoeLoss, ZLossMatchesCpu) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int64_t E : {8, 64, 100}) {
    for (int64_t N : {1, 333, 5000}) {
      for (int variant = 0; variant < 3; ++variant) {  // 0: dlogits; 1: loss only; 2: split batch
        SCOPED_TRACE("E " + std::to_string(E) + " N " + std::to_string(N) + " variant " + std::to_string(variant));
        const VF logits = random_floats(size_t(N * E), seed + uint64_t(E + N), -4.0f, 4.0f);
        const VF d0 = random_floats(size_t(N * E), seed + 5);
        const bool with_d = variant != 1;
        const int64_t N_total = variant == 2 ? 2 * N + 1 : 0;
        const float scale = 1.3f;
        VF want_d = d0;
        double want_loss = 0.0;
        ASSERT_EQ(cpu::router_z_loss(logits.data(), N, E, &want_loss, scale, with_d ? want_d.data() : nullptr, N_total),
                  Status::kOk);
        DeviceArray<float> d_logits(logits), d_d(d0);
        DeviceArray<double> d_loss(1), d_scratch(gpu::moe_loss_scratch_bytes(E) / sizeof(double));
        d_loss.poison();
        d_scratch.poison();
        ASSERT_EQ(gpu::router_z_loss(d_logits.get(), N, E, d_loss.get(), scale, with_d ? d_d.get() : nullptr, N_total,
                                     d_scratch.get(), gpu::moe_loss_scratch_bytes(E), nullptr),
                  Status::kOk);
        EXPECT_LT(loss_error(d_loss.download()[0], want_loss), 1e-12);
        if (with_d) {
          EXPECT_LT(rel_error(d_d.download(), want_d), 1e-6);
        }
      }
    }
  }
  expect_device_clean();
}

// ---------------------------------------------------------------- plan

// GPU plan (outputs and scratch poisoned) against the CPU plan: all outputs bit-equal.
void expect_plan_matches(const VI& expert, int64_t N, int64_t E, int64_t k, int64_t capacity, const VL& before) {
  SCOPED_TRACE("N " + std::to_string(N) + " E " + std::to_string(E) + " k " + std::to_string(k) + " capacity " +
               std::to_string(capacity) + (before.empty() ? "" : " with before"));
  const int64_t A = N * k;
  VL want_off(size_t(E + 1), -5);
  VI want_slot(size_t(A), -5), want_tos(size_t(A), -5);
  int64_t want_dropped = -5;
  ASSERT_EQ(cpu::moe_plan(expert.data(), N, E, k, capacity, want_off.data(), want_slot.data(), want_tos.data(),
                          &want_dropped, before.empty() ? nullptr : before.data()),
            Status::kOk);
  DeviceArray<int32_t> d_expert(nonempty(expert)), d_slot(size_t(std::max<int64_t>(A, 1))),
      d_tos(size_t(std::max<int64_t>(A, 1)));
  DeviceArray<int64_t> d_off(size_t(E + 1)), d_dropped(1), d_before(nonempty(before));
  const size_t bytes = gpu::moe_plan_scratch_bytes(N, E, k);
  ASSERT_GT(bytes, 0u);
  DeviceArray<uint8_t> d_scratch(bytes);
  d_slot.poison();
  d_tos.poison();
  d_off.poison();
  d_dropped.poison();
  d_scratch.poison();
  ASSERT_EQ(gpu::moe_plan(d_expert.get(), N, E, k, capacity, d_off.get(), d_slot.get(), d_tos.get(), d_dropped.get(),
                          before.empty() ? nullptr : d_before.get(), d_scratch.get(), bytes, nullptr),
            Status::kOk);
  const VL off = d_off.download();
  EXPECT_EQ(off, want_off);
  EXPECT_EQ(d_dropped.download()[0], want_dropped);
  VI slot = d_slot.download(), tos = d_tos.download();
  slot.resize(size_t(A));
  EXPECT_EQ(slot, want_slot);
  const int64_t M = want_off[size_t(E)];
  ASSERT_LE(M, A);
  tos.resize(size_t(M));
  want_tos.resize(size_t(M));
  EXPECT_EQ(tos, want_tos);
}

// Capacities: dropless, none, one, tight, loose (some drops), unbounded.
VL capacities(int64_t A, int64_t E) {
  const int64_t mean = std::max<int64_t>(1, A / E);
  return {-1, 0, 1, mean / 2, mean + mean / 4, A + 1};
}

TEST(CudaMoePlan, MatchesCpuExactly) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int64_t E : {8, 64}) {
    for (int64_t k : {1, 2}) {
      // 3000 * k and 70001 * k span several 2048-assignment chunks, the last one partial.
      for (int64_t N : {1, 300, 3000, 70001}) {
        const VI expert = skewed_experts(N, E, k, seed + uint64_t(N * 3 + E + k));
        for (int64_t capacity : capacities(N * k, E)) {
          expect_plan_matches(expert, N, E, k, capacity, {});
          VL before(size_t(k * E));  // arbitrary earlier-block counts around the capacity
          std::mt19937_64 gen(seed + uint64_t(capacity + 11));
          for (int64_t& b : before) b = int64_t(gen() % uint64_t(std::max<int64_t>(capacity, 4) + 3));
          expect_plan_matches(expert, N, E, k, capacity, before);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
  expect_device_clean();
}

TEST(CudaMoePlan, RepeatedExpertsNoTokensAndLargeBatch) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // A token choosing the same expert twice: slots follow assignment order (token, then j).
  const VI repeats = skewed_experts(5000, 8, 2, seed, false);
  for (int64_t capacity : capacities(10000, 8)) expect_plan_matches(repeats, 5000, 8, 2, capacity, {});
  for (int64_t k : {1, 2}) expect_plan_matches({}, 0, 8, k, 5, VL(size_t(k * 8), 3));  // N = 0: zero offsets
  // About 1M assignments (the largest plans the MoE layer makes): 489 chunks.
  const int64_t N = 500000, E = 64, k = 2;
  const VI big = skewed_experts(N, E, k, seed + 1);
  expect_plan_matches(big, N, E, k, -1, {});
  expect_plan_matches(big, N, E, k, N * k / E, {});
  // The largest bucket table (k * E = 4096): opt-in shared memory of the ranking kernel.
  expect_plan_matches(skewed_experts(20000, 2048, 2, seed + 2), 20000, 2048, 2, 12, {});
  expect_device_clean();
}

// The split batch of the MoE layer: blocks of one batch planned with `before` from the whole
// batch keep exactly what the whole plan keeps (checked against the CPU block plans).
TEST(CudaMoePlan, SplitBatchBlocksMatchCpu) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t blocks = 3, n = 1501, N = blocks * n, E = 8, k = 2;
  const VI expert = skewed_experts(N, E, k, seed);
  for (int64_t capacity : capacities(N * k, E)) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * n;
      VL before(size_t(k * E), 0);
      for (int64_t a = 0; a < N * k; ++a) {  // earlier: an earlier choice, or an earlier block's same choice
        const int64_t j = a % k, token = a / k, e = expert[size_t(a)];
        for (int64_t jj = 0; jj < k; ++jj)
          if (j < jj || (j == jj && token < r0)) ++before[size_t(jj * E + e)];
      }
      const VI part(expert.begin() + r0 * k, expert.begin() + (r0 + n) * k);
      expect_plan_matches(part, n, E, k, capacity, before);
    }
  }
  expect_device_clean();
}

// ---------------------------------------------------------------- permute / combine

template <typename T>
class CudaMoeGather : public ::testing::Test {};
TYPED_TEST_SUITE(CudaMoeGather, StorageTypes);

TYPED_TEST(CudaMoeGather, PermuteAndCombineMatchCpu) {
  using T = TypeParam;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int64_t k : {1, 2}) {
    for (int64_t N : {1, 333}) {
      // C = 37: the element-wise path; 64 and 384: 16-byte packs.
      for (int64_t C : {1, 37, 64, 384}) {
        SCOPED_TRACE("k " + std::to_string(k) + " N " + std::to_string(N) + " C " + std::to_string(C));
        const int64_t E = 8, A = N * k;
        const VI expert = skewed_experts(N, E, k, seed + uint64_t(N + k));
        VL off(size_t(E + 1));
        VI slot(static_cast<size_t>(A)), tos(static_cast<size_t>(A));
        int64_t dropped = 0;
        ASSERT_EQ(cpu::moe_plan(expert.data(), N, E, k, std::max<int64_t>(1, A / E), off.data(), slot.data(),
                                tos.data(), &dropped),
                  Status::kOk);
        const int64_t M = off[size_t(E)];
        const VF x = rounded<T>(random_floats(size_t(N * C), seed + 1));
        const VF xp = rounded<T>(random_floats(size_t(M * C), seed + 2));
        const VF dy = rounded<T>(random_floats(size_t(N * C), seed + 3));
        const VF gate = random_floats(size_t(A), seed + 4, 0.0f, 1.0f);
        DeviceArray<int32_t> d_slot(slot), d_tos(tos);
        DeviceArray<T> d_x(x), d_xp(xp), d_dy(dy);
        DeviceArray<float> d_gate(gate), d_dgate(static_cast<size_t>(A));

        VF want_perm(size_t(M * C));  // permute: a copy, exact in T
        ASSERT_EQ(cpu::moe_permute(want_perm.data(), x.data(), tos.data(), M, C), Status::kOk);
        DeviceArray<T> d_perm(size_t(M * C));
        d_perm.poison();
        ASSERT_EQ(gpu::moe_permute<T>(d_perm.get(), d_x.get(), d_tos.get(), M, C, nullptr), Status::kOk);
        EXPECT_EQ(d_perm.download(), want_perm);

        VF want_dx(size_t(N * C));
        ASSERT_EQ(cpu::moe_permute_backward(want_dx.data(), xp.data(), slot.data(), N, k, C), Status::kOk);
        DeviceArray<T> d_dx(size_t(N * C));
        d_dx.poison();
        ASSERT_EQ(gpu::moe_permute_backward<T>(d_dx.get(), d_xp.get(), d_slot.get(), N, k, C, nullptr), Status::kOk);
        EXPECT_LT(stored_rel_error<T>(d_dx.download(), want_dx), tolerance<T>());

        VF want_y(size_t(N * C));
        ASSERT_EQ(cpu::moe_combine(want_y.data(), xp.data(), gate.data(), slot.data(), N, k, C), Status::kOk);
        DeviceArray<T> d_y(size_t(N * C));
        d_y.poison();
        ASSERT_EQ(gpu::moe_combine<T>(d_y.get(), d_xp.get(), d_gate.get(), d_slot.get(), N, k, C, nullptr),
                  Status::kOk);
        EXPECT_LT(stored_rel_error<T>(d_y.download(), want_y), tolerance<T>());

        VF want_dyp(size_t(M * C)), want_dgate(static_cast<size_t>(A));
        ASSERT_EQ(cpu::moe_combine_backward(want_dyp.data(), want_dgate.data(), dy.data(), xp.data(), gate.data(),
                                            slot.data(), N, k, C),
                  Status::kOk);
        DeviceArray<T> d_dyp(size_t(M * C));
        d_dyp.poison();
        d_dgate.poison();
        ASSERT_EQ(gpu::moe_combine_backward<T>(d_dyp.get(), d_dgate.get(), d_dy.get(), d_xp.get(), d_gate.get(),
                                               d_slot.get(), N, k, C, nullptr),
                  Status::kOk);
        if (M > 0) {
          EXPECT_LT(stored_rel_error<T>(d_dyp.download(), want_dyp), tolerance<T>());
        }
        // fp32 dot products of the same (rounded) inputs: order only. Per assignment, against the
        // sum of |terms| (the scale of a summation-order error): with N = 1 the vector is one or
        // two dots, and a dot near 0 would fail a relative L2 bound by chance (~0.5% per dot).
        const VF got_dgate = d_dgate.download();
        for (int64_t a = 0; a < A; ++a) {
          const int32_t s = slot[size_t(a)];
          double terms = 0.0;  // 0 for a dropped assignment: dgate must be exactly 0
          for (int64_t c = 0; s >= 0 && c < C; ++c)
            terms += std::fabs(double(dy[size_t((a / k) * C + c)]) * double(xp[size_t(int64_t(s) * C + c)]));
          EXPECT_LE(std::fabs(double(got_dgate[size_t(a)]) - double(want_dgate[size_t(a)])), 1e-5 * terms)
              << "assignment " << a;
        }
      }
    }
  }
  expect_device_clean();
}

// ---------------------------------------------------------------- arguments

TEST(CudaMoe, RejectsBadArguments) {
  constexpr Status kInvalid = Status::kInvalidArgument;
  DeviceArray<float> f(std::vector<float>(64, 0.5f));
  DeviceArray<int32_t> i(std::vector<int32_t>(64, 0));
  DeviceArray<int64_t> l(std::vector<int64_t>(64, 0));
  DeviceArray<double> d(std::vector<double>(1024, 0.0));
  EXPECT_EQ(gpu::router_topk(f.get(), 2, 2, 3, true, f.get(), i.get(), f.get(), nullptr), kInvalid);  // k > E
  EXPECT_EQ(gpu::router_topk(f.get(), 2, 4, 2, true, nullptr, i.get(), f.get(), nullptr), kInvalid);
  EXPECT_EQ(gpu::router_topk(f.get(), 1, gpu::kRouterMaxExperts + 1, 2, true, f.get(), i.get(), f.get(), nullptr),
            Status::kNotSupported);
  EXPECT_EQ(gpu::router_topk_backward(f.get(), i.get(), f.get(), f.get(), nullptr, -1, 4, 2, true, f.get(), nullptr),
            kInvalid);
  const size_t loss_bytes = gpu::moe_loss_scratch_bytes(4);
  EXPECT_EQ(gpu::moe_balance_loss(f.get(), i.get(), 0, 4, 2, d.get(), 1.0f, nullptr, nullptr, 0, nullptr, d.get(),
                                  loss_bytes, nullptr),
            kInvalid);  // N = 0
  EXPECT_EQ(gpu::moe_balance_loss(f.get(), i.get(), 2, 4, 2, d.get(), 1.0f, nullptr, nullptr, 0, nullptr, d.get(),
                                  loss_bytes - 8, nullptr),
            kInvalid);  // scratch too small
  EXPECT_EQ(gpu::moe_count_assignments(i.get(), 2, 4, 2, nullptr, nullptr), kInvalid);
  EXPECT_EQ(gpu::router_z_loss(f.get(), 2, 4, nullptr, 1.0f, nullptr, 0, d.get(), loss_bytes, nullptr), kInvalid);
  EXPECT_EQ(gpu::router_z_loss(f.get(), 2, 4, d.get(), 1.0f, nullptr, -1, d.get(), loss_bytes, nullptr), kInvalid);
  const size_t plan_bytes = gpu::moe_plan_scratch_bytes(2, 4, 2);
  EXPECT_EQ(
      gpu::moe_plan(i.get(), 2, 2, 3, -1, l.get(), i.get(), i.get(), l.get(), nullptr, d.get(), plan_bytes, nullptr),
      kInvalid);  // k > E
  EXPECT_EQ(
      gpu::moe_plan(i.get(), 2, 4, 2, -1, nullptr, i.get(), i.get(), l.get(), nullptr, d.get(), plan_bytes, nullptr),
      kInvalid);
  EXPECT_EQ(
      gpu::moe_plan(i.get(), 2, 4, 2, -1, l.get(), i.get(), i.get(), l.get(), nullptr, nullptr, plan_bytes, nullptr),
      kInvalid);  // no scratch
  EXPECT_EQ(gpu::moe_plan(i.get(), 2, 4, 2, -1, l.get(), i.get(), i.get(), l.get(), nullptr, d.get(), plan_bytes - 4,
                          nullptr),
            kInvalid);
  EXPECT_EQ(
      gpu::moe_plan(i.get(), 2, 4097, 1, -1, l.get(), i.get(), i.get(), l.get(), nullptr, d.get(), 1 << 20, nullptr),
      Status::kNotSupported);  // k * E > kPlanMaxBuckets
  EXPECT_EQ(gpu::moe_permute<float>(f.get(), f.get(), i.get(), 2, 0, nullptr), kInvalid);
  EXPECT_EQ(gpu::moe_permute_backward<bf16>(nullptr, nullptr, i.get(), 2, 1, 4, nullptr), kInvalid);
  EXPECT_EQ(gpu::moe_combine<float>(f.get(), f.get(), nullptr, i.get(), 2, 1, 4, nullptr), kInvalid);  // no gate
  EXPECT_EQ(gpu::moe_combine_backward<float>(f.get(), f.get(), f.get(), f.get(), f.get(), i.get(), 2, 0, 4, nullptr),
            kInvalid);
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
