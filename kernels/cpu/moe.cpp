// MoE router, router losses, dispatch plan and permute/combine (see moe.h). Row loops run
// under OpenMP with one writer per output row; the two loss sums go through a fixed set of
// row chunks summed serially in double, so every result is independent of the thread count.
// The plan is a serial counting sort whose per-expert cursors live in `offsets` itself.
#include "kernels/cpu/moe.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "kernels/cpu/vec_math.h"

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements below which a loop stays serial
// The permute / combine row gathers move a few bytes per FLOP-free element: serially they
// copy ~10 GB/s (80-120 us for the moe-s layer's 1024 x 2 x 384 floats), less than one
// fork/join costs when another process holds a core (8 ms measured, bench/NOTES.md
// "moe-s"). They go parallel only from 2M elements (8 MB) on.
constexpr int64_t kGatherParallelMin = 1 << 21;
constexpr int kChunks = 64;                // fixed row chunks of the loss sums
constexpr int64_t kExpertBlock = 1024;     // stack counts when the caller passes none

// sum_n row_value(n) in double: each of kChunks fixed row ranges is summed by one thread,
// the partials serially, so the rounding does not depend on how many threads ran.
template <class F>
double chunked_row_sum(int64_t N, bool parallel, const F& row_value) {
  double partial[kChunks];
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < kChunks; ++c) {
    double s = 0.0;
    for (int64_t r = N * c / kChunks; r < N * (c + 1) / kChunks; ++r) s += row_value(r);
    partial[c] = s;
  }
  return std::accumulate(partial, partial + kChunks, 0.0);  // in chunk order
}

// Fixed-order (per build) vectorised dot product.
inline float dot(const float* a, const float* b, int64_t n) {
  vec::VecF acc{};
  int64_t j = 0;
  for (; j + vec::kLanes <= n; j += vec::kLanes) acc += vec::load(a + j) * vec::load(b + j);
  float s = vec::hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// ids[i] in [lo, hi) for i < count: expert ids take [0, E), slots [-1, ...), tokens [0, ...).
Status check_ids(const int32_t* ids, int64_t count, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < count; ++i) {
    if (ids[i] < lo || ids[i] >= hi) return Status::kOutOfRange;
  }
  return Status::kOk;
}

// out[n] (=) sum over kept j, in j order, of w_j * src[slot[n*k+j]], with w = gate, or 1 when
// gate is null: combine and permute_backward are the same gather.
Status gather_sum(float* out, const float* src, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                  int64_t C) {
  if (N < 0 || k <= 0 || C <= 0) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!out || !src || !slot) return Status::kInvalidArgument;
  if (Status s = check_ids(slot, N * k, -1, INT64_MAX); s != Status::kOk) return s;
#pragma omp parallel for schedule(static) if (N * k * C >= kGatherParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* o = out + n * C;
    std::memset(o, 0, size_t(C) * sizeof(float));
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = slot[n * k + j];
      if (s < 0) continue;
      const float w = gate ? gate[n * k + j] : 1.0f;
      const float* r = src + int64_t(s) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += w * r[c];
    }
  }
  return Status::kOk;
}

}  // namespace

Status router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                   int32_t* expert, float* gate) {
  if (N < 0 || E <= 0 || k <= 0 || k > E || E > INT32_MAX) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!logits || !probs || !expert || !gate) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (N * E >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* p = probs + n * E;
    std::memcpy(p, logits + n * E, size_t(E) * sizeof(float));
    const float inv = 1.0f / vec::exp_shift_sum(p, E, vec::row_max(p, E));
    for (int64_t e = 0; e < E; ++e) p[e] *= inv;
    // Insertion into a descending top-k list; experts arrive in index order and only a
    // strictly larger prob moves ahead, so ties keep the lower index first.
    int32_t* ex = expert + n * k;
    float* g = gate + n * k;
    int64_t m = 0;
    for (int64_t e = 0; e < E; ++e) {
      const float v = p[e];
      if (m == k && !(v > g[k - 1])) continue;
      int64_t pos = m < k ? m++ : k - 1;
      for (; pos > 0 && v > g[pos - 1]; --pos) {
        g[pos] = g[pos - 1];
        ex[pos] = ex[pos - 1];
      }
      g[pos] = v;
      ex[pos] = int32_t(e);
    }
    float s = 0.0f;
    for (int64_t j = 0; j < k; ++j) s += g[j];
    for (int64_t j = 0; j < k && renormalize; ++j) g[j] /= s;
  }
  return Status::kOk;
}

Status router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                            const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                            float* dlogits) {
  if (N < 0 || E <= 0 || k <= 0 || k > E) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!probs || !expert || !gate || !dgate || !dlogits) return Status::kInvalidArgument;
  if (Status s = check_ids(expert, N * k, 0, E); s != Status::kOk) return s;
#pragma omp parallel for schedule(static) if (N * E >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* p = probs + n * E;
    const int32_t* ex = expert + n * k;
    const float* g = gate + n * k;
    const float* dg = dgate + n * k;
    float* d = dlogits + n * E;  // holds dprobs until the softmax backward
    for (int64_t e = 0; e < E; ++e) d[e] = dprobs_extra ? dprobs_extra[n * E + e] : 0.0f;
    float S = 0.0f, dot_gg = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      S += p[ex[j]];
      dot_gg += dg[j] * g[j];
    }
    // gate_j = p[e_j] / S when renormalised: d gate_j / d p[e_i] = (delta_ij - gate_j) / S.
    for (int64_t j = 0; j < k; ++j) d[ex[j]] += renormalize ? (dg[j] - dot_gg) / S : dg[j];
    double pd = 0.0;
    for (int64_t e = 0; e < E; ++e) pd += double(p[e]) * double(d[e]);
    const float c = float(pd);
    for (int64_t e = 0; e < E; ++e) d[e] = p[e] * (d[e] - c);
  }
  return Status::kOk;
}

Status moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k, double* loss,
                        float scale, float* dprobs, int64_t* counts, int64_t N_total, const int64_t* group_counts) {
  if (N <= 0 || E <= 0 || k <= 0 || k > E || N_total < 0) return Status::kInvalidArgument;
  if (!probs || !expert || !loss) return Status::kInvalidArgument;
  if (Status s = check_ids(expert, N * k, 0, E); s != Status::kOk) return s;
  // loss = E / (Nt * Nt k) * sum_n sum_e count_e * probs[n, e] (Nt = N unsplit). Without caller
  // storage for the counts, experts go in stack-sized blocks (one counting pass per block).
  const int64_t Nt = N_total > 0 ? N_total : N;
  int64_t local[kExpertBlock];
  const int64_t block = counts || group_counts ? E : kExpertBlock;
  const double norm = double(E) / (double(Nt) * double(Nt) * double(k));
  const float gscale = float(double(scale) * double(E) / (double(Nt) * double(Nt) * double(k)));
  const bool parallel = N * E >= kParallelMin;
  double total = 0.0;
  for (int64_t e0 = 0; e0 < E; e0 += block) {
    const int64_t e1 = std::min(E, e0 + block);
    int64_t* cnt = counts ? counts : local;
    if (group_counts) {
      if (counts) std::copy(group_counts, group_counts + E, counts);
    } else {
      std::fill(cnt, cnt + (e1 - e0), int64_t{0});
      for (int64_t a = 0; a < N * k; ++a) {
        if (expert[a] >= e0 && expert[a] < e1) ++cnt[expert[a] - e0];
      }
    }
    const int64_t* use = group_counts ? group_counts : cnt;
    total += chunked_row_sum(N, parallel, [&](int64_t n) {
      const float* p = probs + n * E;
      double s = 0.0;
      for (int64_t e = e0; e < e1; ++e) s += double(use[e - e0]) * double(p[e]);
      if (dprobs) {
        float* d = dprobs + n * E;
        for (int64_t e = e0; e < e1; ++e) d[e] += gscale * float(use[e - e0]);
      }
      return s;
    });
  }
  *loss = total * norm;
  return Status::kOk;
}

Status moe_count_assignments(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t* counts) {
  if (N < 0 || E <= 0 || k <= 0 || k > E || !counts || (N > 0 && !expert)) return Status::kInvalidArgument;
  if (Status s = check_ids(expert, N * k, 0, E); s != Status::kOk) return s;
  std::fill(counts, counts + k * E, int64_t{0});
  for (int64_t a = 0; a < N * k; ++a) ++counts[(a % k) * E + expert[a]];
  return Status::kOk;
}

Status router_z_loss(const float* logits, int64_t N, int64_t E, double* loss, float scale, float* dlogits,
                     int64_t N_total) {
  if (N <= 0 || E <= 0 || N_total < 0) return Status::kInvalidArgument;
  if (!logits || !loss) return Status::kInvalidArgument;
  const int64_t Nt = N_total > 0 ? N_total : N;
  const double gscale = 2.0 * double(scale) / double(Nt);
  const double total = chunked_row_sum(N, N * E >= kParallelMin, [&](int64_t n) {
    const float* x = logits + n * E;
    const double m = double(*std::max_element(x, x + E));
    double s = 0.0;
    for (int64_t e = 0; e < E; ++e) s += std::exp(double(x[e]) - m);
    const double lse = m + std::log(s);
    if (dlogits) {
      float* d = dlogits + n * E;
      const double c = gscale * lse / s;  // softmax_e = exp(x_e - m) / s
      for (int64_t e = 0; e < E; ++e) d[e] += float(c * std::exp(double(x[e]) - m));
    }
    return lse * lse;
  });
  *loss = total / double(Nt);
  return Status::kOk;
}

Status moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                int32_t* slot, int32_t* token_of_slot, int64_t* dropped, const int64_t* before) {
  if (N < 0 || E <= 0 || k <= 0 || k > E) return Status::kInvalidArgument;
  if (N > INT32_MAX / k) return Status::kInvalidArgument;  // slots are int32
  if (!offsets || !dropped) return Status::kInvalidArgument;
  if (N > 0 && (!expert || !slot || !token_of_slot)) return Status::kInvalidArgument;
  if (Status s = check_ids(expert, N * k, 0, E); s != Status::kOk) return s;
  // Pass 1, in priority order (choice j, then token): offsets[e+1] counts what expert e has
  // kept so far (here); filled[e], what the whole batch has, for the capacity; slot[a] marks
  // kept (0) or dropped (-1). An expert keeps assignments until full: of the batch's earlier
  // ones it kept min(capacity, their number).
  std::fill(offsets, offsets + E + 1, int64_t{0});
  std::vector<int64_t> filled(size_t(E), 0);
  int64_t lost = 0;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t e = 0; e < E; ++e)
      filled[size_t(e)] = before ? std::min(std::max<int64_t>(capacity, 0), before[j * E + e]) : filled[size_t(e)];
    for (int64_t n = 0; n < N; ++n) {
      const int64_t a = n * k + j;
      int64_t& kept = filled[size_t(expert[a])];
      const bool keep = capacity < 0 || kept < capacity;
      kept += keep;
      offsets[expert[a] + 1] += keep;
      lost += !keep;
      slot[a] = keep ? 0 : -1;
    }
  }
  // offsets[e+1] = start of expert e; used as its cursor, it ends at start of e+1.
  int64_t run = 0;
  for (int64_t e = 0; e < E; ++e) run += std::exchange(offsets[e + 1], run);
  // Pass 2, in token order: kept assignments take the next position of their expert.
  for (int64_t a = 0; a < N * k; ++a) {
    if (slot[a] < 0) continue;
    const int64_t s = offsets[expert[a] + 1]++;
    slot[a] = int32_t(s);
    token_of_slot[s] = int32_t(a / k);
  }
  *dropped = lost;
  return Status::kOk;
}

Status moe_permute(float* x_perm, const float* x, const int32_t* token_of_slot, int64_t M, int64_t C) {
  if (M < 0 || C <= 0) return Status::kInvalidArgument;
  if (M == 0) return Status::kOk;
  if (!x_perm || !x || !token_of_slot) return Status::kInvalidArgument;
  if (Status s = check_ids(token_of_slot, M, 0, INT64_MAX); s != Status::kOk) return s;
#pragma omp parallel for schedule(static) if (M * C >= kGatherParallelMin)
  for (int64_t s = 0; s < M; ++s) {
    std::memcpy(x_perm + s * C, x + int64_t(token_of_slot[s]) * C, size_t(C) * sizeof(float));
  }
  return Status::kOk;
}

Status moe_permute_backward(float* dx, const float* dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  return gather_sum(dx, dx_perm, nullptr, slot, N, k, C);
}

Status moe_combine(float* y, const float* y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                   int64_t C) {
  if (N > 0 && !gate) return Status::kInvalidArgument;
  return gather_sum(y, y_perm, gate, slot, N, k, C);
}

Status moe_combine_backward(float* dy_perm, float* dgate, const float* dy, const float* y_perm, const float* gate,
                            const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  if (N < 0 || k <= 0 || C <= 0) return Status::kInvalidArgument;
  if (N == 0) return Status::kOk;
  if (!dy_perm || !dgate || !dy || !y_perm || !gate || !slot) return Status::kInvalidArgument;
  if (Status s = check_ids(slot, N * k, -1, INT64_MAX); s != Status::kOk) return s;
#pragma omp parallel for schedule(static) if (N * k * C >= kGatherParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* d = dy + n * C;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t a = n * k + j;
      if (slot[a] < 0) {
        dgate[a] = 0.0f;
        continue;
      }
      const float g = gate[a];
      float* out = dy_perm + int64_t(slot[a]) * C;  // one writer: a slot has one assignment
      for (int64_t c = 0; c < C; ++c) out[c] = g * d[c];
      dgate[a] = dot(d, y_perm + int64_t(slot[a]) * C, C);
    }
  }
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
