// Auxiliary objectives: segment_mean against a naive loop and by finite differences;
// info_nce against a double-precision reference, by finite differences at T = 0.07 and 1,
// with identical embeddings, argmax ties and argument checks; mse_rows value and gradient;
// kl_distill against a reference, zero for identical logits, by finite differences at T = 1
// and 2, with masked rows; bitwise equality across OpenMP thread counts.
#include "kernels/cpu/objectives.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::expect_gradient_matches;
using castor::testing::probe;
using castor::testing::random_vector;

// --- segment_mean ---------------------------------------------------------------------

// Ranges over 9 rows: overlapping, a length-1 range, the full span.
const std::vector<int32_t> kBegin = {0, 2, 5, 4, 0};
const std::vector<int32_t> kEnd = {3, 6, 6, 9, 9};

TEST(SegmentMean, ForwardMatchesNaive) {
  const int64_t rows = 9, C = 70, n = int64_t(kBegin.size());  // C spans two column blocks
  const auto x = random_vector(size_t(rows * C), 3);
  std::vector<float> out(size_t(n * C), std::nanf(""));
  ASSERT_EQ(segment_mean(out.data(), x.data(), rows, C, kBegin.data(), kEnd.data(), n),
            Status::kOk);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < C; ++c) {
      double s = 0.0;
      for (int32_t r = kBegin[size_t(i)]; r < kEnd[size_t(i)]; ++r) s += x[size_t(r * C + c)];
      const double want = s / double(kEnd[size_t(i)] - kBegin[size_t(i)]);
      ASSERT_NEAR(out[size_t(i * C + c)], want, 1e-6 * (1.0 + std::fabs(want))) << i << "," << c;
    }
  }
  // The length-1 range is a copy of its row.
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[size_t(2 * C + c)], x[size_t(5 * C + c)]);
}

TEST(SegmentMean, BackwardGradcheckAndAccumulates) {
  const int64_t rows = 9, C = 70, n = int64_t(kBegin.size());
  auto x = random_vector(size_t(rows * C), 5);
  const auto r = random_vector(size_t(n * C), 6);  // probe weights = dout
  const auto dx0 = random_vector(x.size(), 7);
  std::vector<float> dx = dx0;
  ASSERT_EQ(segment_mean_backward(dx.data(), r.data(), rows, C, kBegin.data(), kEnd.data(), n),
            Status::kOk);
  std::vector<float> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) grad[i] = dx[i] - dx0[i];  // dx was accumulated into
  std::vector<float> out(size_t(n * C));
  auto loss = [&]() {
    EXPECT_EQ(segment_mean(out.data(), x.data(), rows, C, kBegin.data(), kEnd.data(), n),
              Status::kOk);
    return probe(out, r);
  };
  expect_gradient_matches(x, grad, loss, "dx", int(x.size()));
  // Row 5 (only in ranges 1, 2 (length 1), 3, 4) gets exactly those four contributions.
  for (int64_t c = 0; c < C; ++c) {
    const double want = r[size_t(1 * C + c)] / 4.0 + r[size_t(2 * C + c)] +
                        r[size_t(3 * C + c)] / 5.0 + r[size_t(4 * C + c)] / 9.0;
    EXPECT_NEAR(grad[size_t(5 * C + c)], want, 1e-5) << c;
  }
}

TEST(SegmentMean, RejectsBadRanges) {
  const auto x = random_vector(12, 1);
  std::vector<float> out(4, 1.0f);
  const int32_t b_ok[] = {0}, e_ok[] = {3};
  const int32_t e_empty[] = {0}, b_neg[] = {-1}, e_big[] = {4};
  EXPECT_EQ(segment_mean(out.data(), x.data(), 3, 4, b_ok, e_ok, 1), Status::kOk);
  EXPECT_EQ(segment_mean(out.data(), x.data(), 3, 4, b_ok, e_empty, 1), Status::kInvalidArgument);
  EXPECT_EQ(segment_mean(out.data(), x.data(), 3, 4, b_neg, e_ok, 1), Status::kOutOfRange);
  EXPECT_EQ(segment_mean(out.data(), x.data(), 3, 4, b_ok, e_big, 1), Status::kOutOfRange);
  EXPECT_EQ(segment_mean_backward(out.data(), x.data(), 3, 4, b_ok, e_big, 1),
            Status::kOutOfRange);
  EXPECT_EQ(segment_mean(nullptr, x.data(), 3, 4, b_ok, e_ok, 1), Status::kInvalidArgument);
}

// --- info_nce -------------------------------------------------------------------------

struct NceRef {
  double loss = 0.0;
  int64_t ab = 0, ba = 0;
};

NceRef nce_reference(const std::vector<float>& a, const std::vector<float>& b, int64_t P,
                     int64_t D, double T) {
  auto normalise = [&](const std::vector<float>& x) {
    std::vector<double> h(x.size());
    for (int64_t i = 0; i < P; ++i) {
      double ss = 0.0;
      for (int64_t d = 0; d < D; ++d) ss += double(x[size_t(i * D + d)]) * x[size_t(i * D + d)];
      const double nrm = std::max(std::sqrt(ss), 1e-12);
      for (int64_t d = 0; d < D; ++d) h[size_t(i * D + d)] = x[size_t(i * D + d)] / nrm;
    }
    return h;
  };
  const auto ah = normalise(a), bh = normalise(b);
  std::vector<double> S(size_t(P * P));
  for (int64_t i = 0; i < P; ++i)
    for (int64_t j = 0; j < P; ++j) {
      double s = 0.0;
      for (int64_t d = 0; d < D; ++d) s += ah[size_t(i * D + d)] * bh[size_t(j * D + d)];
      S[size_t(i * P + j)] = s / T;
    }
  NceRef ref;
  for (int dir = 0; dir < 2; ++dir) {  // 0: rows of S (a -> b); 1: columns (b -> a)
    for (int64_t i = 0; i < P; ++i) {
      auto at = [&](int64_t j) { return dir == 0 ? S[size_t(i * P + j)] : S[size_t(j * P + i)]; };
      double m = -std::numeric_limits<double>::infinity();
      int64_t arg = 0;
      for (int64_t j = 0; j < P; ++j)
        if (at(j) > m) m = at(j), arg = j;
      double sum = 0.0;
      for (int64_t j = 0; j < P; ++j) sum += std::exp(at(j) - m);
      ref.loss += m + std::log(sum) - at(i);  // -log softmax(.)_i
      (dir == 0 ? ref.ab : ref.ba) += arg == i;
    }
  }
  ref.loss /= double(2 * P);
  return ref;
}

TEST(InfoNce, MatchesDoubleReference) {
  const int64_t P = 7, D = 9;
  for (float T : {0.07f, 0.5f}) {
    const auto a = random_vector(size_t(P * D), 11), b = random_vector(size_t(P * D), 12);
    std::vector<float> scratch(info_nce_scratch_floats(P, D), std::nanf(""));
    double loss = 0.0;
    int64_t ab = -1, ba = -1;
    ASSERT_EQ(info_nce(a.data(), b.data(), P, D, T, &loss, &ab, &ba, 1.0f, nullptr, nullptr,
                       scratch.data(), scratch.size()),
              Status::kOk);
    const NceRef ref = nce_reference(a, b, P, D, T);
    EXPECT_NEAR(loss, ref.loss, 1e-5 * (1.0 + ref.loss)) << T;
    EXPECT_EQ(ab, ref.ab) << T;
    EXPECT_EQ(ba, ref.ba) << T;
  }
}

class InfoNceGrad : public ::testing::TestWithParam<float> {};

TEST_P(InfoNceGrad, FiniteDifferences) {
  const float T = GetParam();
  const int64_t P = 4, D = 6;
  auto a = random_vector(size_t(P * D), 21), b = random_vector(size_t(P * D), 22);
  std::vector<float> scratch(info_nce_scratch_floats(P, D));
  std::vector<float> da(a.size(), std::nanf("")), db(b.size(), std::nanf(""));
  double loss = 0.0;
  ASSERT_EQ(info_nce(a.data(), b.data(), P, D, T, &loss, nullptr, nullptr, 1.0f, da.data(),
                     db.data(), scratch.data(), scratch.size()),
            Status::kOk);
  auto f = [&]() {
    double l = 0.0;
    EXPECT_EQ(info_nce(a.data(), b.data(), P, D, T, &l, nullptr, nullptr, 1.0f, nullptr, nullptr,
                       scratch.data(), scratch.size()),
              Status::kOk);
    return l;
  };
  // Inputs are O(1) (norms ~2.4); at T = 0.07 the loss curves fast, so the step is smaller.
  const float h = T < 0.5f ? 2e-3f : 1e-2f;
  expect_gradient_matches(a, da, f, "da", int(a.size()), h);
  expect_gradient_matches(b, db, f, "db", int(b.size()), h);

  // grad_scale scales both gradients.
  std::vector<float> da2(a.size()), db2(b.size());
  ASSERT_EQ(info_nce(a.data(), b.data(), P, D, T, &loss, nullptr, nullptr, 0.25f, da2.data(),
                     db2.data(), scratch.data(), scratch.size()),
            Status::kOk);
  for (size_t i = 0; i < da.size(); ++i) {
    EXPECT_FLOAT_EQ(da2[i], 0.25f * da[i]) << i;
    EXPECT_FLOAT_EQ(db2[i], 0.25f * db[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Temperatures, InfoNceGrad, ::testing::Values(0.07f, 1.0f));

TEST(InfoNce, IdenticalEmbeddingsAllCorrect) {
  const int64_t P = 8, D = 16;
  const auto a = random_vector(size_t(P * D), 31);
  std::vector<float> scratch(info_nce_scratch_floats(P, D));
  double loss = 0.0;
  int64_t ab = -1, ba = -1;
  ASSERT_EQ(info_nce(a.data(), a.data(), P, D, 0.07f, &loss, &ab, &ba, 1.0f, nullptr, nullptr,
                     scratch.data(), scratch.size()),
            Status::kOk);
  EXPECT_EQ(ab, P);
  EXPECT_EQ(ba, P);
  EXPECT_LT(loss, nce_reference(a, random_vector(size_t(P * D), 32), P, D, 0.07).loss);
  // Swapping two rows of b makes those two pairs wrong.
  auto b = a;
  for (int64_t d = 0; d < D; ++d) std::swap(b[size_t(d)], b[size_t(D + d)]);
  ASSERT_EQ(info_nce(a.data(), b.data(), P, D, 0.07f, &loss, &ab, &ba, 1.0f, nullptr, nullptr,
                     scratch.data(), scratch.size()),
            Status::kOk);
  EXPECT_EQ(ab, P - 2);
  EXPECT_EQ(ba, P - 2);
}

TEST(InfoNce, ArgmaxTiesGoToLowerIndex) {
  // a = (e0, e1, e2), b = (e0, e0, e2): S rows (1,1,0), (0,0,0), (0,0,1) over T. Row 0 ties
  // 0/1 -> 0 (correct), row 1 ties all -> 0 (wrong); column 1 is (1,0,0) -> 0 (wrong).
  const std::vector<float> a = {1, 0, 0, 0, 1, 0, 0, 0, 1}, b = {1, 0, 0, 1, 0, 0, 0, 0, 1};
  std::vector<float> scratch(info_nce_scratch_floats(3, 3));
  double loss = 0.0;
  int64_t ab = -1, ba = -1;
  ASSERT_EQ(info_nce(a.data(), b.data(), 3, 3, 0.5f, &loss, &ab, &ba, 1.0f, nullptr, nullptr,
                     scratch.data(), scratch.size()),
            Status::kOk);
  EXPECT_EQ(ab, 2);
  EXPECT_EQ(ba, 2);
  EXPECT_NEAR(loss, nce_reference(a, b, 3, 3, 0.5).loss, 1e-6);
}

TEST(InfoNce, RejectsBadArguments) {
  const int64_t P = 3, D = 4;
  const auto a = random_vector(size_t(P * D), 41), b = random_vector(size_t(P * D), 42);
  std::vector<float> scratch(info_nce_scratch_floats(P, D)), da(a.size()), db(b.size());
  double loss = 0.0;
  auto call = [&](int64_t p, float T, float* dap, float* dbp, size_t sf) {
    return info_nce(a.data(), b.data(), p, D, T, &loss, nullptr, nullptr, 1.0f, dap, dbp,
                    scratch.data(), sf);
  };
  EXPECT_EQ(call(P, 0.1f, da.data(), db.data(), scratch.size()), Status::kOk);
  EXPECT_EQ(call(1, 0.1f, da.data(), db.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(P, 0.0f, da.data(), db.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(P, -1.0f, da.data(), db.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(P, std::nanf(""), nullptr, nullptr, scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(P, 0.1f, da.data(), nullptr, scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(P, 0.1f, nullptr, nullptr, scratch.size() - 1), Status::kInvalidArgument);
}

// --- mse_rows -------------------------------------------------------------------------

TEST(MseRows, ValueAndGradient) {
  const int64_t n = 7, D = 5;
  auto pred = random_vector(size_t(n * D), 51);
  const auto target = random_vector(size_t(n * D), 52);
  const float gs = 0.3f;
  std::vector<float> dpred(pred.size(), std::nanf(""));
  double loss = -1.0;
  ASSERT_EQ(mse_rows(pred.data(), target.data(), n, D, &loss, gs, dpred.data()), Status::kOk);
  double want = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    double s = 0.0;
    for (int64_t v = 0; v < D; ++v) {
      const double e = double(pred[size_t(r * D + v)]) - target[size_t(r * D + v)];
      s += e * e;
      EXPECT_NEAR(dpred[size_t(r * D + v)], gs * 2.0 * e / D, 1e-6);
    }
    want += s / D;
  }
  EXPECT_NEAR(loss, want, 1e-9 * want);
  for (auto& g : dpred) g /= gs;  // gradient of the unscaled loss
  auto f = [&]() {
    double l = 0.0;
    EXPECT_EQ(mse_rows(pred.data(), target.data(), n, D, &l, 1.0f, nullptr), Status::kOk);
    return l;
  };
  expect_gradient_matches(pred, dpred, f, "dpred", int(pred.size()));
  EXPECT_EQ(mse_rows(pred.data(), target.data(), n, 0, &loss, 1.0f, nullptr),
            Status::kInvalidArgument);
}

// --- kl_distill -----------------------------------------------------------------------

struct KlRef {
  double loss = 0.0;
  int64_t count = 0;
  std::vector<double> d;  // gs * T * (p_s - p_t), 0 on masked rows
};

KlRef kl_reference(const std::vector<float>& s, const std::vector<float>& t,
                   const std::vector<int32_t>& mask, int64_t n, int64_t V, double T, double gs) {
  KlRef ref;
  ref.d.assign(size_t(n * V), 0.0);
  auto log_softmax = [&](const float* z) {
    std::vector<double> l(static_cast<size_t>(V));
    double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, z[v] / T);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] / T - m);
    for (int64_t v = 0; v < V; ++v) l[size_t(v)] = z[v] / T - m - std::log(sum);
    return l;
  };
  for (int64_t i = 0; i < n; ++i) {
    if (!mask.empty() && mask[size_t(i)] < 0) continue;
    const auto ls = log_softmax(s.data() + i * V), lt = log_softmax(t.data() + i * V);
    for (int64_t v = 0; v < V; ++v) {
      const double pt = std::exp(lt[size_t(v)]), ps = std::exp(ls[size_t(v)]);
      ref.loss += T * T * pt * (lt[size_t(v)] - ls[size_t(v)]);
      ref.d[size_t(i * V + v)] = gs * T * (ps - pt);
    }
    ref.count += 1;
  }
  return ref;
}

TEST(KlDistill, MatchesReference) {
  const int64_t n = 6, V = 37;  // V is not a multiple of the vector width
  const auto s = random_vector(size_t(n * V), 61, 2.0f), t = random_vector(size_t(n * V), 62, 2.0f);
  const std::vector<int32_t> mask = {0, -1, 5, 3, -1, 0};
  for (float T : {1.0f, 2.0f}) {
    std::vector<float> d(s.size(), std::nanf(""));
    double loss = 0.0;
    int64_t count = -1;
    ASSERT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, T, &loss, &count, 0.7f, d.data()),
              Status::kOk);
    const KlRef ref = kl_reference(s, t, mask, n, V, T, 0.7);
    EXPECT_EQ(count, 4);
    EXPECT_NEAR(loss, ref.loss, 1e-5 * ref.loss) << T;
    for (size_t i = 0; i < d.size(); ++i) ASSERT_NEAR(d[i], ref.d[i], 1e-6) << T << " " << i;
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[size_t(V + v)], 0.0f) << "masked row";
  }
  EXPECT_EQ(kl_distill(s.data(), t.data(), nullptr, n, V, 0.0f, nullptr, nullptr, 1.0f, nullptr),
            Status::kInvalidArgument);
}

TEST(KlDistill, IdenticalLogitsGiveZero) {
  const int64_t n = 5, V = 101;
  const auto z = random_vector(size_t(n * V), 71, 3.0f);
  for (float T : {1.0f, 2.0f, 0.3f}) {
    std::vector<float> d(z.size(), std::nanf(""));
    double loss = 1.0;
    int64_t count = 0;
    ASSERT_EQ(kl_distill(z.data(), z.data(), nullptr, n, V, T, &loss, &count, 1.0f, d.data()),
              Status::kOk);
    EXPECT_EQ(loss, 0.0) << T;
    EXPECT_EQ(count, n);
    EXPECT_EQ(d, std::vector<float>(z.size(), 0.0f)) << T;
  }
}

class KlGrad : public ::testing::TestWithParam<float> {};

TEST_P(KlGrad, FiniteDifferences) {
  const float T = GetParam();
  const int64_t n = 3, V = 13;
  auto s = random_vector(size_t(n * V), 81, 2.0f);
  const auto t = random_vector(size_t(n * V), 82, 2.0f);
  const std::vector<int32_t> mask = {0, -1, 2};
  std::vector<float> d(s.size());
  double loss = 0.0;
  int64_t count = 0;
  ASSERT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, T, &loss, &count, 1.0f, d.data()),
            Status::kOk);
  auto f = [&]() {
    double l = 0.0;
    int64_t c = 0;
    EXPECT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, T, &l, &c, 1.0f, nullptr),
              Status::kOk);
    return l;
  };
  expect_gradient_matches(s, d, f, "dstudent", int(s.size()));
}

INSTANTIATE_TEST_SUITE_P(Temperatures, KlGrad, ::testing::Values(1.0f, 2.0f));

TEST(KlDistill, MaskedRowsContributeNothing) {
  const int64_t n = 4, V = 20;
  auto s = random_vector(size_t(n * V), 91), t = random_vector(size_t(n * V), 92);
  const std::vector<int32_t> mask = {-1, 0, -1, 7};
  double full = 0.0, sub = 0.0;
  int64_t c_full = 0, c_sub = 0;
  ASSERT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, 2.0f, &full, &c_full, 1.0f, nullptr),
            Status::kOk);
  // Only rows 1 and 3, unmasked.
  std::vector<float> s2, t2;
  for (int64_t i : {1, 3}) {
    s2.insert(s2.end(), s.begin() + i * V, s.begin() + (i + 1) * V);
    t2.insert(t2.end(), t.begin() + i * V, t.begin() + (i + 1) * V);
  }
  ASSERT_EQ(kl_distill(s2.data(), t2.data(), nullptr, 2, V, 2.0f, &sub, &c_sub, 1.0f, nullptr),
            Status::kOk);
  EXPECT_EQ(c_full, 2);
  EXPECT_EQ(c_sub, 2);
  EXPECT_EQ(full, sub);
  EXPECT_GT(full, 0.0);
  // Garbage in masked rows changes nothing.
  for (int64_t v = 0; v < V; ++v) s[size_t(v)] = t[size_t(2 * V + v)] = 1e3f * float(v % 3);
  double again = 0.0;
  ASSERT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, 2.0f, &again, &c_full, 1.0f, nullptr),
            Status::kOk);
  EXPECT_EQ(again, full);
}

// --- determinism ----------------------------------------------------------------------

template <typename Fn>
void with_threads(int threads, Fn fn) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  fn();
  omp_set_num_threads(saved);
}

TEST(Objectives, InfoNceDeterministicAcrossThreads) {
  const int64_t P = 300, D = 64;  // P * P exceeds the kernels' parallel threshold
  const auto a = random_vector(size_t(P * D), 101), b = random_vector(size_t(P * D), 102);
  std::vector<float> scratch(info_nce_scratch_floats(P, D));
  double loss[2];
  int64_t ab[2], ba[2];
  std::vector<float> da[2], db[2];
  for (int k = 0; k < 2; ++k) {
    da[k].assign(a.size(), 0.0f);
    db[k].assign(b.size(), 0.0f);
    with_threads(k + 1, [&] {
      ASSERT_EQ(info_nce(a.data(), b.data(), P, D, 0.07f, &loss[k], &ab[k], &ba[k], 1.0f,
                         da[k].data(), db[k].data(), scratch.data(), scratch.size()),
                Status::kOk);
    });
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(ab[0], ab[1]);
  EXPECT_EQ(ba[0], ba[1]);
  EXPECT_EQ(da[0], da[1]);
  EXPECT_EQ(db[0], db[1]);
}

TEST(Objectives, KlDistillDeterministicAcrossThreads) {
  const int64_t n = 70, V = 1001;
  const auto s = random_vector(size_t(n * V), 111, 2.0f), t = random_vector(size_t(n * V), 112, 2.0f);
  std::vector<int32_t> mask(size_t(n), 0);
  for (int64_t i = 0; i < n; i += 7) mask[size_t(i)] = -1;
  double loss[2];
  int64_t count[2];
  std::vector<float> d[2];
  for (int k = 0; k < 2; ++k) {
    d[k].assign(s.size(), 1.0f);
    with_threads(k + 1, [&] {
      ASSERT_EQ(kl_distill(s.data(), t.data(), mask.data(), n, V, 2.0f, &loss[k], &count[k], 0.5f,
                           d[k].data()),
                Status::kOk);
    });
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(count[0], count[1]);
  EXPECT_EQ(d[0], d[1]);
}

}  // namespace
}  // namespace castor::kernels::cpu
