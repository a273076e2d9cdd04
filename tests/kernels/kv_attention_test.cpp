// Cached attention (attention_decode): new query rows against past + n cached keys, checked
// against a naive double-precision reference and against attention_forward over the whole
// sequence (the rows past .. past + n - 1 of its output), with grouped-query heads, a
// per-query first key, strided q / out, several thread counts (bitwise the same), and
// argument validation.
#include "kernels/cpu/kv_attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "support/gradcheck.h"

namespace castor::kernels::cpu {
namespace {

using castor::testing::random_vector;

struct Split {
  int64_t past, n, H, KVH, D;
};

void PrintTo(const Split& s, std::ostream* os) {
  *os << "past " << s.past << " n " << s.n << " H " << s.H << " KVH " << s.KVH << " D " << s.D;
}

// A full sequence of T = past + n positions in the fused training layout, the cache view of
// it (k and v rows of KVH*D) and the queries of the new rows.
struct Data {
  Split s;
  int64_t T, ld;
  std::vector<float> qkv, k, v, q;
  std::vector<int32_t> key_begin;  // per position of the full sequence

  Data(const Split& sp, uint64_t seed) : s(sp), T(sp.past + sp.n), ld((sp.H + 2 * sp.KVH) * sp.D) {
    qkv = random_vector(size_t(T * ld), seed);
    const int64_t kvd = s.KVH * s.D;
    k.resize(size_t(T * kvd));
    v.resize(size_t(T * kvd));
    for (int64_t t = 0; t < T; ++t) {
      std::copy_n(qkv.begin() + t * ld + s.H * s.D, kvd, k.begin() + t * kvd);
      std::copy_n(qkv.begin() + t * ld + (s.H + s.KVH) * s.D, kvd, v.begin() + t * kvd);
    }
    // Segments of 5 positions each attend within themselves (as media does); others to all.
    key_begin.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) key_begin[size_t(t)] = (t / 5) % 2 == 1 ? int32_t(t / 5 * 5) : 0;
  }

  // Naive attention output of new row i (absolute position past + i), head h, in double.
  std::vector<double> reference(bool masked) const {
    const int64_t H = s.H, D = s.D, group = H / s.KVH, kvd = s.KVH * s.D;
    std::vector<double> out(size_t(s.n * H * D));
    for (int64_t i = 0; i < s.n; ++i) {
      const int64_t t = s.past + i, lo = masked ? key_begin[size_t(t)] : 0;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kh = h / group;
        std::vector<double> p(size_t(t + 1), 0.0);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = lo; j <= t; ++j) {
          double d = 0.0;
          for (int64_t c = 0; c < D; ++c)
            d += double(qkv[size_t(t * ld + h * D + c)]) * double(k[size_t(j * kvd + kh * D + c)]);
          p[size_t(j)] = d / std::sqrt(double(D));
          m = std::max(m, p[size_t(j)]);
        }
        double sum = 0.0;
        for (int64_t j = lo; j <= t; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
        for (int64_t c = 0; c < D; ++c) {
          double o = 0.0;
          for (int64_t j = lo; j <= t; ++j) o += p[size_t(j)] / sum * double(v[size_t(j * kvd + kh * D + c)]);
          out[size_t((i * H + h) * D + c)] = o;
        }
      }
    }
    return out;
  }

  // attention_decode of the new rows, q read in place from the fused rows (stride ld).
  std::vector<float> decode(int threads, bool masked, Status* status = nullptr) const {
    const KvAttentionShape ks{s.past, s.n, s.H, s.KVH, s.D};
    std::vector<float> out(size_t(s.n * s.H * s.D), std::nanf(""));
    std::vector<float> scratch(attention_decode_scratch_floats(ks, threads), std::nanf(""));
    const Status st =
        attention_decode(out.data(), s.H * s.D, qkv.data() + s.past * ld, ld, k.data(), v.data(), s.KVH * s.D, ks,
                         scratch.data(), scratch.size(), masked ? key_begin.data() + s.past : nullptr);
    if (status)
      *status = st;
    else
      EXPECT_EQ(st, Status::kOk);
    return out;
  }

  // attention_forward over the whole sequence: its rows past .. T-1.
  std::vector<float> forward_rows(bool masked) const {
    const AttentionShape as{1, T, s.H, s.KVH, s.D};
    std::vector<float> out(size_t(T * s.H * s.D)), lse(size_t(s.H * T));
    std::vector<float> scratch(attention_scratch_floats(as, omp_get_max_threads()));
    EXPECT_EQ(attention_forward(out.data(), lse.data(), qkv.data(), as, scratch.data(), scratch.size(),
                                masked ? key_begin.data() : nullptr),
              Status::kOk);
    return std::vector<float>(out.begin() + s.past * s.H * s.D, out.end());
  }
};

double worst_error(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i]));
    worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
  }
  return worst;
}

class KvAttentionShapes : public ::testing::TestWithParam<Split> {};

TEST_P(KvAttentionShapes, MatchesReferenceAndFullForward) {
  const Data d(GetParam(), 17);
  for (bool masked : {false, true}) {
    const std::vector<float> got = d.decode(omp_get_max_threads(), masked);
    EXPECT_LE(worst_error(got, d.reference(masked)), 2e-6) << (masked ? "with key_begin" : "causal");
    const std::vector<float> full = d.forward_rows(masked);
    std::vector<double> full_d(full.begin(), full.end());
    EXPECT_LE(worst_error(got, full_d), 2e-6) << "against attention_forward, " << (masked ? "key_begin" : "causal");
  }
}

TEST_P(KvAttentionShapes, SameBitsOnAnyThreadCount) {
  const Data d(GetParam(), 23);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = d.decode(1, true);
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(d.decode(threads, true), one) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvAttentionShapes,
                         ::testing::Values(Split{0, 1, 2, 2, 8},    // a single position
                                           Split{0, 13, 4, 2, 8},   // prefill, GQA
                                           Split{12, 1, 4, 1, 16},  // one decode step, MQA
                                           Split{9, 3, 6, 3, 4},    // a few tokens at once
                                           Split{70, 1, 4, 4, 8},   // past longer than a block
                                           Split{5, 150, 2, 1, 8},  // new rows over several blocks
                                           Split{0, 130, 4, 2, 32}),
                         [](const ::testing::TestParamInfo<Split>& info) {
                           const Split& s = info.param;
                           return "past" + std::to_string(s.past) + "_n" + std::to_string(s.n) + "_H" +
                                  std::to_string(s.H) + "_KVH" + std::to_string(s.KVH) + "_D" + std::to_string(s.D);
                         });

TEST(KvAttention, RefusesBadArguments) {
  const Data d({4, 2, 4, 2, 8}, 3);
  const KvAttentionShape ok{4, 2, 4, 2, 8};
  std::vector<float> out(size_t(2 * 32)), scratch(attention_decode_scratch_floats(ok, 1));
  auto call = [&](const KvAttentionShape& s, int64_t ldo, int64_t ldq, int64_t ldkv, float* sc, size_t n) {
    return attention_decode(out.data(), ldo, d.qkv.data() + 4 * d.ld, ldq, d.k.data(), d.v.data(), ldkv, s, sc, n);
  };
  EXPECT_EQ(call(ok, 32, d.ld, 16, scratch.data(), scratch.size()), Status::kOk);
  EXPECT_EQ(call({4, 0, 4, 2, 8}, 32, d.ld, 16, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call({-1, 2, 4, 2, 8}, 32, d.ld, 16, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call({4, 2, 4, 3, 8}, 32, d.ld, 16, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 31, d.ld, 16, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 32, 31, 16, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 32, d.ld, 15, scratch.data(), scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 32, d.ld, 16, scratch.data(), scratch.size() - 1), Status::kInvalidArgument);
  EXPECT_EQ(call(ok, 32, d.ld, 16, nullptr, scratch.size()), Status::kInvalidArgument);
  EXPECT_EQ(attention_decode_scratch_floats({0, 0, 4, 2, 8}, 4), 0u);
}

}  // namespace
}  // namespace castor::kernels::cpu
