// Causal GQA attention: forward and backward against a naive double-precision reference
// (full T x T softmax with a causal mask), finite-difference checks of the q, k and v
// parts of dqkv, determinism across thread counts, and argument validation.
#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

size_t qkv_size(const AttentionShape& s) { return size_t(s.B * s.T * (s.H + 2 * s.KVH) * s.D); }
size_t out_size(const AttentionShape& s) { return size_t(s.B * s.T * s.H * s.D); }

// Index of element d of head `head` (counted over all q|k|v heads) at (b, t) in qkv.
size_t at(const AttentionShape& s, int64_t b, int64_t t, int64_t head, int64_t d) {
  return size_t(((b * s.T + t) * (s.H + 2 * s.KVH) + head) * s.D + d);
}

struct Reference {
  std::vector<double> out, lse, dqkv;
};

// Naive attention in double: materialises the full causal T x T probability matrix per
// (b, h); if dout is given, also the gradient with respect to qkv.
Reference naive(const std::vector<float>& qkv, const AttentionShape& s,
                const std::vector<float>* dout = nullptr, const std::vector<int32_t>* key_begin = nullptr) {
  Reference ref;
  ref.out.assign(out_size(s), 0.0);
  ref.lse.assign(size_t(s.B * s.H * s.T), 0.0);
  ref.dqkv.assign(qkv_size(s), 0.0);
  const int64_t T = s.T, D = s.D, group = s.H / s.KVH;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> P(size_t(T * T)), dP(size_t(T * T));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t kh = s.H + h / group, vh = s.H + s.KVH + h / group;
      // First key of query i: key_begin clamped to [0, i] (all keys when absent).
      auto first = [&](int64_t i) {
        return key_begin ? std::clamp<int64_t>((*key_begin)[size_t(b * T + i)], 0, i) : int64_t(0);
      };
      for (int64_t i = 0; i < T; ++i) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = first(i); j <= i; ++j) {
          double dotqk = 0.0;
          for (int64_t d = 0; d < D; ++d)
            dotqk += double(qkv[at(s, b, i, h, d)]) * double(qkv[at(s, b, j, kh, d)]);
          P[i * T + j] = dotqk * scale;
          m = std::max(m, P[i * T + j]);
        }
        double sum = 0.0;
        for (int64_t j = first(i); j <= i; ++j) sum += std::exp(P[i * T + j] - m);
        const double lse = m + std::log(sum);
        ref.lse[size_t((b * s.H + h) * T + i)] = lse;
        for (int64_t j = 0; j <= i; ++j) P[i * T + j] = j < first(i) ? 0.0 : std::exp(P[i * T + j] - lse);
        for (int64_t d = 0; d < D; ++d) {
          double o = 0.0;
          for (int64_t j = first(i); j <= i; ++j) o += P[i * T + j] * double(qkv[at(s, b, j, vh, d)]);
          ref.out[size_t(((b * T + i) * s.H + h) * D + d)] = o;
        }
      }
      if (dout == nullptr) continue;
      auto dO = [&](int64_t i, int64_t d) {
        return double((*dout)[size_t(((b * T + i) * s.H + h) * D + d)]);
      };
      for (int64_t i = 0; i < T; ++i) {
        double row = 0.0;  // sum_j P_ij dP_ij
        for (int64_t j = first(i); j <= i; ++j) {
          double v = 0.0;
          for (int64_t d = 0; d < D; ++d) v += dO(i, d) * double(qkv[at(s, b, j, vh, d)]);
          dP[i * T + j] = v;
          row += P[i * T + j] * v;
        }
        for (int64_t j = first(i); j <= i; ++j) {
          const double dS = P[i * T + j] * (dP[i * T + j] - row) * scale;
          for (int64_t d = 0; d < D; ++d) {
            ref.dqkv[at(s, b, i, h, d)] += dS * double(qkv[at(s, b, j, kh, d)]);
            ref.dqkv[at(s, b, j, kh, d)] += dS * double(qkv[at(s, b, i, h, d)]);
            ref.dqkv[at(s, b, j, vh, d)] += P[i * T + j] * dO(i, d);
          }
        }
      }
    }
  }
  return ref;
}

struct Result {
  std::vector<float> out, lse, dqkv;
};

Result run(const std::vector<float>& qkv, const AttentionShape& s, const std::vector<float>* dout,
        int threads, const std::vector<int32_t>* key_begin = nullptr) {
  const int32_t* kb = key_begin ? key_begin->data() : nullptr;
  Result r;
  r.out.assign(out_size(s), std::nanf(""));
  r.lse.assign(size_t(s.B * s.H * s.T), std::nanf(""));
  std::vector<float> scratch(attention_scratch_floats(s, threads), std::nanf(""));
  EXPECT_EQ(attention_forward(r.out.data(), r.lse.data(), qkv.data(), s, scratch.data(),
                              scratch.size(), kb),
            Status::kOk);
  if (dout != nullptr) {
    r.dqkv.assign(qkv_size(s), std::nanf(""));  // backward must overwrite every element
    EXPECT_EQ(attention_backward(r.dqkv.data(), dout->data(), qkv.data(), r.out.data(),
                                 r.lse.data(), s, scratch.data(), scratch.size(), kb),
              Status::kOk);
  }
  return r;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i]));
    if (!(err <= worst)) {  // also catches NaN
      worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      worst_i = i;
    }
  }
  EXPECT_LE(worst, tol) << what << "[" << worst_i << "]: got " << got[worst_i] << " want "
                        << want[worst_i];
}

class AttentionShapes : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionShapes, ForwardAndBackwardMatchNaive) {
  const AttentionShape s = GetParam();
  const auto qkv = random_vector(qkv_size(s), 11, 1.0f);
  const auto dout = random_vector(out_size(s), 12, 1.0f);
  const Reference ref = naive(qkv, s, &dout);
  const Result got = run(qkv, s, &dout, omp_get_max_threads());
  expect_close(got.out, ref.out, 2e-5, "out");
  expect_close(got.lse, ref.lse, 2e-5, "lse");
  expect_close(got.dqkv, ref.dqkv, 1e-4, "dqkv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionShapes,
    ::testing::Values(AttentionShape{1, 1, 1, 1, 4},      // single token
                      AttentionShape{2, 13, 4, 2, 8},     // GQA, tiny
                      AttentionShape{2, 70, 4, 4, 16},    // MHA, crosses a query block
                      AttentionShape{1, 150, 6, 2, 64},   // GQA group 3, ragged last block
                      AttentionShape{1, 129, 2, 1, 20}),  // MQA, D not a lane multiple
    [](const ::testing::TestParamInfo<AttentionShape>& info) {
      const AttentionShape& s = info.param;
      char name[96];
      std::snprintf(name, sizeof name, "B%lldT%lldH%lldKVH%lldD%lld", (long long)s.B,
                    (long long)s.T, (long long)s.H, (long long)s.KVH, (long long)s.D);
      return std::string(name);
    });

// Finite differences on the q, k and v parts of qkv separately, so each part gets its
// own sample of coordinates. L = <out, r>, so dout = r.
void gradcheck(const AttentionShape& s) {
  auto qkv = random_vector(qkv_size(s), 21, 1.0f);
  const auto r = random_vector(out_size(s), 22, 1.0f);
  const Result got = run(qkv, s, &r, omp_get_max_threads());
  const struct {
    const char* name;
    int64_t first_head, heads;
  } parts[] = {{"dq", 0, s.H}, {"dk", s.H, s.KVH}, {"dv", s.H + s.KVH, s.KVH}};
  for (const auto& part : parts) {
    std::vector<size_t> idx;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t t = 0; t < s.T; ++t)
        for (int64_t hh = part.first_head; hh < part.first_head + part.heads; ++hh)
          for (int64_t d = 0; d < s.D; ++d) idx.push_back(at(s, b, t, hh, d));
    std::vector<float> sub(idx.size()), analytic(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      sub[i] = qkv[idx[i]];
      analytic[i] = got.dqkv[idx[i]];
    }
    auto loss = [&]() {
      std::vector<float> x = qkv;
      for (size_t i = 0; i < idx.size(); ++i) x[idx[i]] = sub[i];
      return probe(run(x, s, nullptr, 1).out, r);
    };
    expect_gradient_matches(sub, analytic, loss, part.name, 32);
  }
}

// Per-query first keys (segments encoded on their own): runs of queries sharing a first key
// that crosses the 64-row query blocks, first keys past the query (clamped) and negative ones.
TEST(Attention, KeyBeginMatchesNaive) {
  const AttentionShape s{2, 90, 4, 2, 8};
  std::vector<int32_t> kb(size_t(s.B * s.T), 0);
  for (int64_t t = 0; t < s.T; ++t) {
    kb[size_t(t)] = t >= 10 && t < 75 ? 10 : (t >= 75 ? int32_t(t) : 0);  // b = 0: a segment [10, 75)
    kb[size_t(s.T + t)] = t % 7 == 3 ? int32_t(t + 5) : (t % 11 == 0 ? -4 : int32_t(t / 3));
  }
  const auto qkv = random_vector(qkv_size(s), 41, 1.0f);
  const auto dout = random_vector(out_size(s), 42, 1.0f);
  const Reference ref = naive(qkv, s, &dout, &kb);
  const Result got = run(qkv, s, &dout, omp_get_max_threads(), &kb);
  expect_close(got.out, ref.out, 2e-5, "out");
  expect_close(got.lse, ref.lse, 2e-5, "lse");
  expect_close(got.dqkv, ref.dqkv, 1e-4, "dqkv");
  // Not a no-op: the plain causal result differs.
  const Reference causal = naive(qkv, s);
  double diff = 0.0;
  for (size_t i = 0; i < causal.out.size(); ++i) diff = std::max(diff, std::fabs(causal.out[i] - ref.out[i]));
  EXPECT_GT(diff, 1e-2);
}

TEST(Attention, GradcheckGroupedQuery) { gradcheck(AttentionShape{2, 9, 4, 2, 8}); }

TEST(Attention, GradcheckMultiHead) { gradcheck(AttentionShape{1, 70, 2, 2, 8}); }

// The result must not depend on the thread count nor on which thread runs which item.
TEST(Attention, DeterministicAcrossThreadCounts) {
  const AttentionShape s{3, 100, 4, 2, 32};
  const auto qkv = random_vector(qkv_size(s), 31, 1.0f);
  const auto dout = random_vector(out_size(s), 32, 1.0f);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Result one = run(qkv, s, &dout, 1);
  omp_set_num_threads(4);
  const Result four = run(qkv, s, &dout, 4);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.out, four.out);
  EXPECT_EQ(one.lse, four.lse);
  EXPECT_EQ(one.dqkv, four.dqkv);
}

TEST(Attention, RejectsBadArguments) {
  float buf[64] = {};
  const AttentionShape bad_group{1, 4, 3, 2, 4};  // H % KVH != 0
  EXPECT_EQ(attention_scratch_floats(bad_group, 1), 0u);
  EXPECT_EQ(attention_forward(buf, buf, buf, bad_group, buf, 64), Status::kInvalidArgument);
  const AttentionShape s{1, 4, 2, 1, 4};
  const size_t need = attention_scratch_floats(s, 1);
  ASSERT_GT(need, 0u);
  std::vector<float> scratch(need - 1);
  EXPECT_EQ(attention_forward(buf, buf, buf, s, scratch.data(), scratch.size()),
            Status::kInvalidArgument);
  EXPECT_EQ(attention_backward(buf, buf, buf, buf, buf, s, scratch.data(), scratch.size()),
            Status::kInvalidArgument);
  EXPECT_EQ(attention_forward(nullptr, buf, buf, s, buf, 64), Status::kInvalidArgument);
}

}  // namespace
}  // namespace castor::kernels::cpu
