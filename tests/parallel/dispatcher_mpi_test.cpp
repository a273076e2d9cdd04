// AllToAllDispatcher under mpirun (2 and 4 ranks, ep = world): with experts computing a
// known function of their rows, dispatch -> experts -> combine and its backward give
// exactly what the single-process LocalDispatcher gives on each rank's tokens, dropless and
// with capacity drops, with uneven token counts, a rank without tokens and ranks whose
// experts receive nothing; identity experts with gates summing to 1 return the input.
#include "parallel/all_to_all_dispatcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "parallel/mpi_comm.h"

namespace castor::parallel {
namespace {

constexpr int64_t kC = 6, kK = 2;

struct Tokens {
  int64_t N = 0;
  std::vector<float> x, gate, dy;
  std::vector<int32_t> expert;
};

// Token choices: k distinct experts in [lo, hi) per token.
Tokens make_tokens(int64_t N, int64_t lo, int64_t hi, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(0.1f, 1.0f);
  Tokens t;
  t.N = N;
  for (int64_t i = 0; i < N * kC; ++i) t.x.push_back(normal(gen));
  for (int64_t i = 0; i < N * kC; ++i) t.dy.push_back(normal(gen));
  for (int64_t n = 0; n < N; ++n) {
    const int32_t a = int32_t(lo + int64_t(gen() % uint64_t(hi - lo)));
    int32_t b = int32_t(lo + int64_t(gen() % uint64_t(hi - lo)));
    if (b == a) b = int32_t(lo + (a - lo + 1) % (hi - lo));
    t.expert.push_back(a);
    t.expert.push_back(b);
    const float ga = unit(gen), gb = unit(gen);
    t.gate.push_back(ga / (ga + gb));
    t.gate.push_back(gb / (ga + gb));
  }
  return t;
}

struct Result {
  std::vector<float> y, dx, dgate;
};

// Expert e maps a row to (e + 1) * row + e (identity: row); its input gradient is (e + 1) * d.
Result run(nn::TokenDispatcher& d, const Tokens& t, int64_t capacity, int64_t first_expert, bool identity) {
  d.plan(t.expert.data(), t.N, kK, capacity, nullptr);
  const std::vector<int64_t>& off = d.expert_offsets();
  const size_t n = size_t(std::max<int64_t>(off.back() * kC, 1));  // the kernels take no null rows
  std::vector<float> in(n), out(n), dout(n), din(n);
  d.dispatch(t.x.data(), kC, in.data());
  for (int64_t e = 0; e < d.local_experts(); ++e) {
    const float g = float(first_expert + e);
    for (int64_t i = off[size_t(e)] * kC; i < off[size_t(e) + 1] * kC; ++i)
      out[size_t(i)] = identity ? in[size_t(i)] : (g + 1.0f) * in[size_t(i)] + g;
  }
  Result r;
  r.y.assign(size_t(t.N * kC), NAN);
  r.dx.assign(size_t(t.N * kC), NAN);
  r.dgate.assign(size_t(t.N * kK), NAN);
  d.combine(out.data(), t.gate.data(), kC, r.y.data());
  d.combine_backward(t.dy.data(), out.data(), t.gate.data(), kC, dout.data(), r.dgate.data());
  for (int64_t e = 0; e < d.local_experts(); ++e) {
    const float g = identity ? 0.0f : float(first_expert + e);
    for (int64_t i = off[size_t(e)] * kC; i < off[size_t(e) + 1] * kC; ++i) din[size_t(i)] = (g + 1.0f) * dout[size_t(i)];
  }
  d.dispatch_backward(din.data(), kC, r.dx.data());
  return r;
}

void expect_same(const Tokens& t, int64_t E, int64_t capacity, const char* what) {
  MpiComm w(MPI_COMM_WORLD, "ep");
  AllToAllDispatcher a2a(w, E);
  nn::LocalDispatcher local(E);
  const Result got = run(a2a, t, capacity, a2a.first_local_expert(), false);
  const Result want = run(local, t, capacity, 0, false);
  EXPECT_EQ(got.y, want.y) << what << " (rank " << w.rank() << ")";
  EXPECT_EQ(got.dx, want.dx) << what;
  EXPECT_EQ(got.dgate, want.dgate) << what;
  EXPECT_EQ(a2a.dropped(), local.dropped()) << what;
}

TEST(AllToAllDispatcher, MatchesLocalDispatcherDroplessAndWithDrops) {
  MpiComm w(MPI_COMM_WORLD, "ep");
  const int64_t E = 2 * w.size();
  const Tokens t = make_tokens(37 + 5 * w.rank(), 0, E, 100 + uint64_t(w.rank()));
  expect_same(t, E, -1, "dropless");
  expect_same(t, E, 6, "capacity 6");
  expect_same(t, E, 0, "capacity 0 drops everything");
}

TEST(AllToAllDispatcher, EmptyRanksAndIdleExperts) {
  MpiComm w(MPI_COMM_WORLD, "ep");
  const int64_t E = 2 * w.size();
  // Every token picks rank 0's two experts: the other ranks' experts get no rows; rank 1
  // has no tokens at all.
  const Tokens t = make_tokens(w.rank() == 1 ? 0 : 21, 0, 2, 7 + uint64_t(w.rank()));
  expect_same(t, E, -1, "all tokens to rank 0");
}

TEST(AllToAllDispatcher, IdentityExpertsReturnTheInput) {
  MpiComm w(MPI_COMM_WORLD, "ep");
  const int64_t E = 2 * w.size();
  const Tokens t = make_tokens(29, 0, E, 50 + uint64_t(w.rank()));
  AllToAllDispatcher a2a(w, E);
  const Result r = run(a2a, t, -1, a2a.first_local_expert(), true);
  for (size_t i = 0; i < t.x.size(); ++i) ASSERT_NEAR(r.y[i], t.x[i], 1e-6f * (1.0f + std::fabs(t.x[i]))) << i;
  for (size_t i = 0; i < t.dy.size(); ++i) ASSERT_NEAR(r.dx[i], t.dy[i], 1e-6f * (1.0f + std::fabs(t.dy[i]))) << i;
}

TEST(AllToAllDispatcher, RejectsExpertsNotDivisibleByEp) {
  MpiComm w(MPI_COMM_WORLD, "ep");
  EXPECT_THROW(AllToAllDispatcher(w, 2 * w.size() + 1), castor::Error);
}

}  // namespace
}  // namespace castor::parallel
