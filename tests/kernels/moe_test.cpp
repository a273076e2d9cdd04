// kernels/cpu/moe: router top-k against a double-precision reference (ties to the lower
// index), router / balance / z-loss gradients by finite differences, the dispatch plan's
// choice-by-choice capacity priority, permute / combine against naive loops and by finite
// differences, bitwise determinism across thread counts, and argument checks.
#include "kernels/cpu/moe.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;
using VF = std::vector<float>;
using VI = std::vector<int32_t>;
using VL = std::vector<int64_t>;
constexpr Status kOk = Status::kOk;

// Rankings far from ties: 0.4 * (a random permutation of 0..E-1 per row) + noise in +-0.1.
VF spaced_logits(int64_t N, int64_t E, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> noise(-0.1f, 0.1f);
  VF x(size_t(N * E));
  std::vector<int> perm(E);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    for (int64_t e = 0; e < E; ++e) x[n * E + e] = 0.4f * float(perm[e]) + noise(gen);
  }
  return x;
}

struct Routed {
  VF probs, gate;
  VI expert;
};
Routed route(const VF& logits, int64_t N, int64_t E, int64_t k) {
  Routed r{VF(size_t(N * E)), VF(size_t(N * k)), VI(size_t(N * k))};
  EXPECT_EQ(router_topk(logits.data(), N, E, k, k >= 2, r.probs.data(), r.expert.data(), r.gate.data()), kOk);
  return r;
}

// Double softmax, stable sort by prob (ties keep the lower index), renormalised for k >= 2.
void expect_matches_reference(const VF& logits, int64_t N, int64_t E, int64_t k) {
  const Routed r = route(logits, N, E, k);
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits.data() + n * E;
    const double m = *std::max_element(l, l + E);
    std::vector<double> p(E);
    double s = 0.0;
    for (int64_t e = 0; e < E; ++e) s += p[e] = std::exp(l[e] - m);
    for (auto& v : p) v /= s;
    for (int64_t e = 0; e < E; ++e) ASSERT_NEAR(r.probs[n * E + e], p[e], 2e-6 * p[e]);
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double S = 0.0;
    for (int64_t j = 0; j < k; ++j) S += p[order[j]];
    for (int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(r.expert[n * k + j], order[j]) << "row " << n << " choice " << j;
      const double want = k >= 2 ? p[order[j]] / S : p[order[j]];
      ASSERT_NEAR(r.gate[n * k + j], want, 2e-6 * want);
    }
  }
}

TEST(MoeRouter, TopkMatchesDoubleReference) {
  const auto logits = spaced_logits(37, 8, 1);
  for (int64_t k : {1, 2, 3}) expect_matches_reference(logits, 37, 8, k);
}

TEST(MoeRouter, TopkTiesGoToLowerIndex) {
  const VF logits = {1, 3, 3, 0, 3, /**/ 2, 2, 2, 2, 2};
  expect_matches_reference(logits, 2, 5, 3);
  const Routed r = route(logits, 2, 5, 3);
  EXPECT_EQ(r.expert, (VI{1, 2, 4, 0, 1, 2}));
  for (float g : r.gate) EXPECT_NEAR(g, 1.0f / 3.0f, 1e-7f);
  EXPECT_EQ(route(logits, 2, 5, 1).expert, (VI{1, 0}));
}

TEST(MoeRouter, BackwardMatchesFiniteDifferences) {
  const int64_t N = 6, E = 5;
  for (int64_t k : {1, 2}) {
    for (bool with_extra : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "k " << k << " extra " << with_extra);
      auto logits = spaced_logits(N, E, 10 + k);
      const auto w = random_vector(size_t(N * k), 20 + k), extra = random_vector(size_t(N * E), 30 + k);
      auto loss = [&] {
        const Routed r = route(logits, N, E, k);
        return probe(r.gate, w) + (with_extra ? probe(r.probs, extra) : 0.0);
      };
      const Routed r = route(logits, N, E, k);
      VF dlogits(size_t(N * E), 99.0f);
      ASSERT_EQ(router_topk_backward(r.probs.data(), r.expert.data(), r.gate.data(), w.data(),
                                     with_extra ? extra.data() : nullptr, N, E, k, k >= 2, dlogits.data()),
                kOk);
      expect_gradient_matches(logits, dlogits, loss, "router dlogits", 30);
    }
  }
}

TEST(MoeBalanceLoss, ValueMatchesHandComputation) {
  const VF probs = {0.5f, 0.3f, 0.2f, 0.1f, 0.6f, 0.3f, 0.2f, 0.2f, 0.6f};
  const VI expert = {0, 1, 1, 0, 2, 0};
  // f = (3, 2, 1) / 6, P = (0.8, 1.1, 1.1) / 3: 3 * (3/6 * 0.8/3 + 2/6 * 1.1/3 + 1/6 * 1.1/3).
  double loss = 0.0, again = 0.0;
  VL counts(3, -1);
  ASSERT_EQ(moe_balance_loss(probs.data(), expert.data(), 3, 3, 2, &loss, 1.0f, nullptr, counts.data()), kOk);
  EXPECT_NEAR(loss, 0.95, 1e-6);
  EXPECT_EQ(counts, (VL{3, 2, 1}));
  ASSERT_EQ(moe_balance_loss(probs.data(), expert.data(), 3, 3, 2, &again, 1.0f, nullptr, nullptr), kOk);
  EXPECT_EQ(again, loss);
}

TEST(MoeBalanceLoss, GradientMatchesFiniteDifferencesWithFHeld) {
  const int64_t N = 9, E = 4, k = 2;
  auto probs = random_vector(size_t(N * E), 40);
  for (auto& p : probs) p = std::fabs(p);
  VI expert(size_t(N * k));
  for (int64_t a = 0; a < N * k; ++a) expert[a] = int32_t((3 * a + a / k) % E);
  const float scale = 0.5f;
  auto loss = [&] {
    double l = 0.0;
    EXPECT_EQ(moe_balance_loss(probs.data(), expert.data(), N, E, k, &l, scale, nullptr, nullptr), kOk);
    return scale * l;
  };
  VF d(probs.size(), 0.25f);  // accumulates (+=)
  double l = 0.0;
  ASSERT_EQ(moe_balance_loss(probs.data(), expert.data(), N, E, k, &l, scale, d.data(), nullptr), kOk);
  for (auto& v : d) v -= 0.25f;
  expect_gradient_matches(probs, d, loss, "balance dprobs", 36);
}

TEST(MoeBalanceLoss, UniformAssignmentGivesOne) {
  // E = 1536 also takes the blocked count path (no counts buffer, E > 1024).
  for (int64_t E : {4, 1536}) {
    const int64_t k = 2, N = E / 2 * 3;
    const auto r = route(random_vector(size_t(N * E), 41), N, E, k);
    VI expert(size_t(N * k));
    for (int64_t a = 0; a < N * k; ++a) expert[a] = int32_t(a % E);  // N k / E each
    double loss = 0.0;
    ASSERT_EQ(moe_balance_loss(r.probs.data(), expert.data(), N, E, k, &loss, 1.0f, nullptr, nullptr), kOk);
    EXPECT_NEAR(loss, 1.0, 1e-5) << "E " << E;
  }
}

TEST(RouterZLoss, ValueAndGradient) {
  const int64_t N = 7, E = 6;
  auto logits = random_vector(size_t(N * E), 50, 3.0f);
  double want = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    for (int64_t e = 0; e < E; ++e) s += std::exp(double(logits[n * E + e]));
    want += std::log(s) * std::log(s) / double(N);
  }
  const float scale = 0.7f;
  auto loss = [&] {
    double l = 0.0;
    EXPECT_EQ(router_z_loss(logits.data(), N, E, &l, scale, nullptr), kOk);
    return scale * l;
  };
  double l = 0.0;
  VF d(logits.size(), 0.1f);
  ASSERT_EQ(router_z_loss(logits.data(), N, E, &l, scale, d.data()), kOk);
  EXPECT_NEAR(l, want, 1e-9 * want);
  for (auto& v : d) v -= 0.1f;
  expect_gradient_matches(logits, d, loss, "z-loss dlogits", 42);
}

struct Plan {
  VL offsets;
  VI slot, token_of_slot;
  int64_t dropped = -1;
};
Plan plan(const VI& expert, int64_t N, int64_t E, int64_t k, int64_t capacity) {
  Plan p{VL(size_t(E + 1), -5), VI(size_t(N * k), -5), VI(size_t(N * k), -5)};
  EXPECT_EQ(
      moe_plan(expert.data(), N, E, k, capacity, p.offsets.data(), p.slot.data(), p.token_of_slot.data(), &p.dropped),
      kOk);
  return p;
}

TEST(MoePlan, DroplessKeepsEverythingInTokenOrder) {
  const int64_t N = 50, E = 6, k = 2;
  const VI expert = route(spaced_logits(N, E, 60), N, E, k).expert;
  const Plan p = plan(expert, N, E, k, -1);
  EXPECT_EQ(p.dropped, 0);
  VL counts(size_t(E), 0);
  for (int32_t e : expert) ++counts[e];
  EXPECT_EQ(p.offsets[0], 0);
  for (int64_t e = 0; e < E; ++e) EXPECT_EQ(p.offsets[e + 1] - p.offsets[e], counts[e]);
  std::vector<int> seen(size_t(N * k), 0);
  for (int64_t a = 0; a < N * k; ++a) {
    const int32_t s = p.slot[a], e = expert[a];
    ASSERT_TRUE(s >= p.offsets[e] && s < p.offsets[e + 1]) << "assignment " << a;
    ++seen[s];
    EXPECT_EQ(p.token_of_slot[s], a / k);
  }
  for (int c : seen) EXPECT_EQ(c, 1);
  for (int64_t e = 0; e < E; ++e)  // tokens increase within each expert's range
    for (int64_t s = p.offsets[e] + 1; s < p.offsets[e + 1]; ++s) EXPECT_LT(p.token_of_slot[s - 1], p.token_of_slot[s]);
}

TEST(MoePlan, CapacityIsConsideredChoiceByChoiceAndZeroDropsAll) {
  // Capacity 2. Token 0's second choice (expert 1) is dropped: tokens 2 and 3 fill expert 1
  // with their first choices, which come first although they are later tokens.
  const VI expert = {0, 1, /**/ 2, 1, /**/ 1, 0, /**/ 1, 2};
  const Plan p = plan(expert, 4, 3, 2, 2);
  EXPECT_EQ(p.dropped, 2);
  EXPECT_EQ(p.offsets, (VL{0, 2, 4, 6}));
  EXPECT_EQ(p.slot, (VI{0, -1, 4, -1, 2, 1, 3, 5}));
  EXPECT_EQ(p.token_of_slot, (VI{0, 2, 2, 3, 1, 3, -5, -5}));
  const Plan none = plan(expert, 4, 3, 2, 0);  // capacity 0 drops everything
  EXPECT_EQ(none.dropped, 8);
  EXPECT_EQ(none.offsets, (VL{0, 0, 0, 0}));
  EXPECT_EQ(none.slot, VI(8, -1));
  EXPECT_EQ(none.token_of_slot, VI(8, -5));
}

// A routed plan with drops (capacity 11 for 40 x 2 assignments over 4 experts).
struct Dispatch {
  int64_t N = 40, E = 4, k = 2, C = 5, M = 0;
  Routed r;
  Plan p;
  Dispatch() : r(route(spaced_logits(N, E, 70), N, E, k)), p(plan(r.expert, N, E, k, 11)) { M = p.offsets[E]; }
};

// A batch split into blocks (tensor-parallel ranks each routing a block of the rows): with
// the whole batch's counts, each block's balance and z losses are its share of the whole
// losses, its probability gradients are the whole batch's rows, and its plan keeps and drops
// exactly the assignments the whole plan does (capacity counted over the batch).
TEST(MoeSplitBatch, BlocksReproduceTheWholeBatch) {
  const int64_t N = 24, E = 4, k = 2, blocks = 3, n = N / blocks, capacity = 7;
  const VF logits = spaced_logits(N, E, 31);
  const Routed r = route(logits, N, E, k);
  double whole_bal = 0.0, whole_z = 0.0;
  VF dprobs(size_t(N * E), 0.0f), dlogits(size_t(N * E), 0.0f);
  ASSERT_EQ(moe_balance_loss(r.probs.data(), r.expert.data(), N, E, k, &whole_bal, 0.5f, dprobs.data(), nullptr), kOk);
  ASSERT_EQ(router_z_loss(logits.data(), N, E, &whole_z, 0.5f, dlogits.data()), kOk);
  VL offsets(E + 1), whole_kept(E, 0);
  VI slot(N * k), tos(N * k);
  int64_t dropped = 0;
  ASSERT_EQ(moe_plan(r.expert.data(), N, E, k, capacity, offsets.data(), slot.data(), tos.data(), &dropped), kOk);
  ASSERT_GT(dropped, 0);  // the capacity binds

  VL totals(E, 0);  // the batch's assignments per expert
  for (int32_t e : r.expert) ++totals[size_t(e)];
  double bal = 0.0, z = 0.0;
  int64_t block_dropped = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * n;
    VL counts(k * E), before(k * E, 0);
    ASSERT_EQ(moe_count_assignments(r.expert.data() + r0 * k, n, E, k, counts.data()), kOk);
    for (int64_t a = 0; a < N * k; ++a) {  // earlier in the order: an earlier choice, or an earlier block's same choice
      const int64_t j = a % k, token = a / k, e = r.expert[size_t(a)];
      for (int64_t jj = 0; jj < k; ++jj)
        if (j < jj || (j == jj && token < r0)) ++before[size_t(jj * E + e)];
    }
    double part_bal = 0.0, part_z = 0.0;
    VF dp(size_t(n * E), 0.0f), dl(size_t(n * E), 0.0f);
    ASSERT_EQ(moe_balance_loss(r.probs.data() + r0 * E, r.expert.data() + r0 * k, n, E, k, &part_bal, 0.5f, dp.data(),
                               nullptr, N, totals.data()),
              kOk);
    ASSERT_EQ(router_z_loss(logits.data() + r0 * E, n, E, &part_z, 0.5f, dl.data(), N), kOk);
    bal += part_bal;
    z += part_z;
    for (int64_t i = 0; i < n * E; ++i) {
      EXPECT_FLOAT_EQ(dp[size_t(i)], dprobs[size_t(r0 * E + i)]);
      EXPECT_NEAR(dl[size_t(i)], dlogits[size_t(r0 * E + i)], 1e-7);
    }
    VL off(E + 1);
    VI s(n * k), t(n * k);
    int64_t d = 0;
    ASSERT_EQ(moe_plan(r.expert.data() + r0 * k, n, E, k, capacity, off.data(), s.data(), t.data(), &d, before.data()),
              kOk);
    block_dropped += d;
    for (int64_t a = 0; a < n * k; ++a) EXPECT_EQ(s[size_t(a)] >= 0, slot[size_t(r0 * k + a)] >= 0) << "assignment " << r0 * k + a;
  }
  EXPECT_NEAR(bal, whole_bal, 1e-12 * whole_bal);
  EXPECT_NEAR(z, whole_z, 1e-12 * whole_z);
  EXPECT_EQ(block_dropped, dropped);
}

TEST(MoePermuteCombine, MatchesNaiveLoops) {
  Dispatch d;
  const int64_t N = d.N, k = d.k, C = d.C, M = d.M;
  ASSERT_GT(d.p.dropped, 0);
  const auto x = random_vector(size_t(N * C), 71), yp = random_vector(size_t(M * C), 72),
             dy = random_vector(size_t(N * C), 73);
  VF xp(size_t(M * C)), dx(size_t(N * C), 9.0f), y(size_t(N * C), 9.0f), dyp(size_t(M * C), 9.0f),
      dgate(size_t(N * k), 9.0f);
  ASSERT_EQ(moe_permute(xp.data(), x.data(), d.p.token_of_slot.data(), M, C), kOk);
  ASSERT_EQ(moe_permute_backward(dx.data(), yp.data(), d.p.slot.data(), N, k, C), kOk);
  ASSERT_EQ(moe_combine(y.data(), yp.data(), d.r.gate.data(), d.p.slot.data(), N, k, C), kOk);
  ASSERT_EQ(
      moe_combine_backward(dyp.data(), dgate.data(), dy.data(), yp.data(), d.r.gate.data(), d.p.slot.data(), N, k, C),
      kOk);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0.0, comb = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t s = d.p.slot[n * k + j];
        if (s < 0) continue;
        EXPECT_EQ(xp[s * C + c], x[n * C + c]);
        EXPECT_NEAR(dyp[s * C + c], d.r.gate[n * k + j] * dy[n * C + c], 1e-6);
        sum += yp[s * C + c];
        comb += d.r.gate[n * k + j] * yp[s * C + c];
      }
      EXPECT_NEAR(dx[n * C + c], sum, 1e-6);
      EXPECT_NEAR(y[n * C + c], comb, 1e-6);
    }
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = d.p.slot[n * k + j];
      double dot = 0.0;
      for (int64_t c = 0; s >= 0 && c < C; ++c) dot += double(dy[n * C + c]) * yp[s * C + c];
      EXPECT_NEAR(dgate[n * k + j], dot, 1e-5);
    }
  }
}

TEST(MoePermuteCombine, GradientsMatchFiniteDifferences) {
  Dispatch d;
  const int64_t N = d.N, k = d.k, C = d.C, M = d.M;
  auto x = random_vector(size_t(N * C), 80);
  auto gate = d.r.gate;
  const auto w = random_vector(size_t(C * C), 81), r = random_vector(size_t(N * C), 82);
  auto matmul = [&](const VF& a, bool transpose) {  // a (M x C) @ W or @ W^T
    VF out(size_t(M * C), 0.0f);
    for (int64_t s = 0; s < M; ++s)
      for (int64_t i = 0; i < C; ++i)
        for (int64_t o = 0; o < C; ++o) out[s * C + o] += a[s * C + i] * (transpose ? w[o * C + i] : w[i * C + o]);
    return out;
  };
  auto forward_yp = [&] {
    VF xp(size_t(M * C));
    EXPECT_EQ(moe_permute(xp.data(), x.data(), d.p.token_of_slot.data(), M, C), kOk);
    return matmul(xp, false);
  };
  auto loss = [&] {
    VF y(size_t(N * C));
    EXPECT_EQ(moe_combine(y.data(), forward_yp().data(), gate.data(), d.p.slot.data(), N, k, C), kOk);
    return probe(y, r);
  };
  const VF yp = forward_yp();
  VF dyp(size_t(M * C)), dgate(size_t(N * k)), dx(size_t(N * C));
  ASSERT_EQ(moe_combine_backward(dyp.data(), dgate.data(), r.data(), yp.data(), gate.data(), d.p.slot.data(), N, k, C),
            kOk);
  ASSERT_EQ(moe_permute_backward(dx.data(), matmul(dyp, true).data(), d.p.slot.data(), N, k, C), kOk);
  expect_gradient_matches(x, dx, loss, "permute+combine dx", 40);
  expect_gradient_matches(gate, dgate, loss, "combine dgate", 40);
}

// Every kernel's outputs, as bytes, for a problem large enough to run multi-threaded.
std::vector<char> run_everything(int64_t N, int64_t C, int64_t capacity) {
  const int64_t E = 16, k = 2;
  std::vector<char> bytes;
  auto keep = [&](const auto& v) {
    const char* p = reinterpret_cast<const char*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size() * sizeof(v[0]));
  };
  const auto logits = random_vector(size_t(N * E), 90);
  const Routed r = route(logits, N, E, k);
  const Plan p = plan(r.expert, N, E, k, capacity);
  const int64_t M = p.offsets[E];
  VF dlogits(size_t(N * E), 0.0f), dprobs(size_t(N * E), 0.0f);
  std::vector<double> losses(2, 0.0);
  const auto x = random_vector(size_t(N * C), 91), dgate_in = random_vector(size_t(N * k), 92);
  EXPECT_EQ(moe_balance_loss(r.probs.data(), r.expert.data(), N, E, k, &losses[0], 0.3f, dprobs.data(), nullptr), kOk);
  EXPECT_EQ(router_z_loss(logits.data(), N, E, &losses[1], 0.2f, dprobs.data()), kOk);
  EXPECT_EQ(router_topk_backward(r.probs.data(), r.expert.data(), r.gate.data(), dgate_in.data(), dprobs.data(), N, E,
                                 k, true, dlogits.data()),
            kOk);
  VF xp(size_t(M * C)), y(size_t(N * C)), dyp(size_t(M * C)), dgate(size_t(N * k)), dx(size_t(N * C));
  EXPECT_EQ(moe_permute(xp.data(), x.data(), p.token_of_slot.data(), M, C), kOk);
  EXPECT_EQ(moe_combine(y.data(), xp.data(), r.gate.data(), p.slot.data(), N, k, C), kOk);
  EXPECT_EQ(moe_combine_backward(dyp.data(), dgate.data(), y.data(), xp.data(), r.gate.data(), p.slot.data(), N, k, C),
            kOk);
  EXPECT_EQ(moe_permute_backward(dx.data(), dyp.data(), p.slot.data(), N, k, C), kOk);
  for (const VF* v : std::initializer_list<const VF*>{&r.probs, &r.gate, &dlogits, &dprobs, &xp, &y, &dyp, &dgate, &dx})
    keep(*v);
  keep(r.expert), keep(p.slot), keep(p.token_of_slot), keep(p.offsets), keep(losses);
  return bytes;
}

// Small (serial copies) and large enough for the copies' parallel branch (>= 2M floats,
// dropless so every token is kept).
TEST(Moe, BitwiseDeterministicAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  for (const auto& [N, C, capacity] : {std::tuple<int64_t, int64_t, int64_t>{3000, 48, 400}, {8192, 256, -1}}) {
    omp_set_num_threads(1);
    const auto one = run_everything(N, C, capacity);
    omp_set_num_threads(2);
    const auto two = run_everything(N, C, capacity);
    EXPECT_TRUE(one == two) << "outputs differ between 1 and 2 threads (N " << N << ", C " << C << ")";
  }
  omp_set_num_threads(saved);
}

TEST(Moe, RejectsBadArguments) {
  float f[8] = {};
  int32_t i[8] = {0, 1, 2, 1, 0, 0, 0, 0};
  int64_t off[4], l = 0;
  double loss = 0.0;
  EXPECT_EQ(router_topk(f, 2, 2, 3, true, f, i, f), Status::kInvalidArgument);  // k > E
  EXPECT_EQ(router_topk(nullptr, 2, 4, 1, false, f, i, f), Status::kInvalidArgument);
  EXPECT_EQ(router_topk_backward(f, i, f, f, nullptr, 2, 2, 2, true, f), Status::kOutOfRange);
  EXPECT_EQ(moe_balance_loss(f, i, 2, 2, 2, &loss, 1.0f, nullptr, nullptr), Status::kOutOfRange);
  EXPECT_EQ(moe_balance_loss(f, i, 0, 2, 1, &loss, 1.0f, nullptr, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(router_z_loss(f, 2, 0, &loss, 1.0f, nullptr), Status::kInvalidArgument);
  EXPECT_EQ(moe_plan(i, 2, 2, 2, -1, off, i, i, &l), Status::kOutOfRange);  // id 2 >= E
  EXPECT_EQ(moe_plan(i, 2, 2, 3, -1, off, i, i, &l), Status::kInvalidArgument);
  const int32_t bad[2] = {-2, 0};
  EXPECT_EQ(moe_permute(f, f, bad, 2, 1), Status::kOutOfRange);
  EXPECT_EQ(moe_permute(f, f, i, 2, 0), Status::kInvalidArgument);
  EXPECT_EQ(moe_combine(f, f, f, bad, 1, 2, 1), Status::kOutOfRange);
  EXPECT_EQ(moe_permute_backward(f, f, bad, 2, 1, 1), Status::kOutOfRange);
  EXPECT_EQ(moe_combine_backward(f, f, f, f, f, nullptr, 1, 1, 1), Status::kInvalidArgument);
  EXPECT_EQ(moe_permute(nullptr, nullptr, nullptr, 0, 4), kOk);  // nothing kept
}

}  // namespace
}  // namespace castor::kernels::cpu
