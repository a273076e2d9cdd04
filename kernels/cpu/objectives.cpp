// Auxiliary objectives (see objectives.h). Per-row losses go to a fixed-size stack block (or
// the caller's scratch) from OpenMP loops and are summed serially in row order, so results
// never depend on the thread count. InfoNCE forms S with one sgemm and its gradient with two;
// its P x P softmaxes run in double. KL distillation streams each row three times with the
// vectorised exp of vec_math.h and needs no scratch.
#include "kernels/cpu/objectives.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vec_math.h"

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // work (elements) below which loops stay serial
constexpr int64_t kColBlock = 64;          // segment_mean column block
constexpr int64_t kRowBlock = 1024;        // rows per stack block of row losses
constexpr double kNormEps = 1e-12;

bool valid_temperature(float t) { return t > 0.0f && std::isfinite(t); }

// Doubles kept in float scratch (2 floats each), via memcpy: no alignment assumptions.
inline void put_double(float* base, int64_t i, double v) { std::memcpy(base + 2 * i, &v, sizeof v); }
inline double get_double(const float* base, int64_t i) {
  double v;
  std::memcpy(&v, base + 2 * i, sizeof v);
  return v;
}

// Checks the ranges; returns the total number of rows they cover in *work.
Status check_ranges(int64_t rows, const int32_t* begin, const int32_t* end, int64_t n,
                    int64_t* work) {
  *work = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (end[i] <= begin[i]) return Status::kInvalidArgument;
    if (begin[i] < 0 || end[i] > rows) return Status::kOutOfRange;
    *work += end[i] - begin[i];
  }
  return Status::kOk;
}

Status check_segment_args(const float* p, const float* q, int64_t rows, int64_t C,
                          const int32_t* begin, const int32_t* end, int64_t n, int64_t* work) {
  if (rows < 0 || C <= 0 || n < 0) return Status::kInvalidArgument;
  if (n > 0 && (p == nullptr || q == nullptr || begin == nullptr || end == nullptr)) {
    return Status::kInvalidArgument;
  }
  return check_ranges(rows, begin, end, n, work);
}

// One softmax cross-entropy row with target `diag`: *loss = lse - row[diag], *hit = argmax
// (ties to the lower index) == diag. If backward: row (=) softmax(row) - onehot(diag).
void xent_row(float* row, int64_t P, int64_t diag, bool backward, double* loss, float* hit) {
  float m = row[0];
  int64_t arg = 0;
  for (int64_t j = 1; j < P; ++j) {
    if (row[j] > m) {
      m = row[j];
      arg = j;
    }
  }
  double sum = 0.0;
  for (int64_t j = 0; j < P; ++j) sum += std::exp(double(row[j]) - double(m));
  const double lse = double(m) + std::log(sum);
  *loss = lse - double(row[diag]);
  *hit = arg == diag ? 1.0f : 0.0f;
  if (backward) {
    for (int64_t j = 0; j < P; ++j) {
      row[j] = float(std::exp(double(row[j]) - lse) - (j == diag ? 1.0 : 0.0));
    }
  }
}

// xh = x / max(||x||, eps) per row; inv = 1 / max(||x||, eps); clamped = 1 where clamped.
void normalise_rows(const float* x, float* xh, float* inv, float* clamped, int64_t P,
                    int64_t D) {
#pragma omp parallel for schedule(static) if (P * D >= kParallelMin)
  for (int64_t i = 0; i < P; ++i) {
    const float* xi = x + i * D;
    double ss = 0.0;
    for (int64_t d = 0; d < D; ++d) ss += double(xi[d]) * double(xi[d]);
    const double nrm = std::sqrt(ss);
    const bool cl = !(nrm >= kNormEps);
    const double s = 1.0 / (cl ? kNormEps : nrm);
    inv[i] = float(s);
    clamped[i] = cl ? 1.0f : 0.0f;
    for (int64_t d = 0; d < D; ++d) xh[i * D + d] = float(double(xi[d]) * s);
  }
}

// g (= dL/dx̂ on entry) becomes dL/dx = (g - x̂ (x̂ . g)) / ||x||, or g / eps where clamped.
void normalise_backward(float* g, const float* xh, const float* inv, const float* clamped,
                        int64_t P, int64_t D) {
#pragma omp parallel for schedule(static) if (P * D >= kParallelMin)
  for (int64_t i = 0; i < P; ++i) {
    float* gi = g + i * D;
    const float* hi = xh + i * D;
    double dot = 0.0;
    if (clamped[i] == 0.0f) {
      for (int64_t d = 0; d < D; ++d) dot += double(hi[d]) * double(gi[d]);
    }
    for (int64_t d = 0; d < D; ++d) {
      gi[d] = float(double(inv[i]) * (double(gi[d]) - double(hi[d]) * dot));
    }
  }
}

using vec::kLanes;
using vec::VecF;
using vec::VecI;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types stay inside this file

// Lanes [0, n) from p, the others = pad.
inline VecF load_partial(const float* p, int64_t n, float pad) {
  float buf[kLanes];
  for (int64_t i = 0; i < kLanes; ++i) buf[i] = i < n ? p[i] : pad;
  return vec::load(buf);
}

inline VecI lanes_below(int64_t n) {
  VecI m;
  for (int64_t i = 0; i < kLanes; ++i) m[i] = i < n ? -1 : 0;
  return m;
}

// One distillation row: returns T^2 KL(p_t || p_s); writes d (=) gs T (p_s - p_t) if d.
// Exp arguments are formed as (z - max z) / T and differences as (z_t - z_s) / T: a subtract
// then a multiply, which the compiler cannot fuse, so student and teacher see the same
// arithmetic and identical rows give exactly 0.
double kl_row(const float* zs, const float* zt, int64_t V, float T, float gs, float* d) {
  const float inv_t = 1.0f / T;
  const float ms = vec::row_max(zs, V);
  const float mt = vec::row_max(zt, V);
  constexpr int64_t kFlush = 32 * kLanes;  // float lane sums move to double this often
  double sum_s = 0.0, sum_t = 0.0, cross = 0.0;  // cross = sum e_t (t - s) / T
  for (int64_t j0 = 0; j0 < V; j0 += kFlush) {
    const int64_t j1 = std::min(V, j0 + kFlush);
    VecF as{}, at{}, ac{};
    int64_t j = j0;
    for (; j + kLanes <= j1; j += kLanes) {
      const VecF s = vec::load(zs + j), t = vec::load(zt + j);
      const VecF et = vec::exp_nonpositive((t - mt) * inv_t);
      as += vec::exp_nonpositive((s - ms) * inv_t);
      at += et;
      ac += et * ((t - s) * inv_t);
    }
    if (j < j1) {  // tail: padded lanes have exp 0 and a zero difference
      const VecF s = load_partial(zs + j, j1 - j, -INFINITY);
      const VecF t = load_partial(zt + j, j1 - j, -INFINITY);
      const VecF et = vec::exp_nonpositive((t - mt) * inv_t);
      const VecF diff = lanes_below(j1 - j) ? (t - s) * inv_t : VecF{};
      as += vec::exp_nonpositive((s - ms) * inv_t);
      at += et;
      ac += et * diff;
    }
    sum_s += double(vec::hsum(as));
    sum_t += double(vec::hsum(at));
    cross += double(vec::hsum(ac));
  }
  const double tt = double(T);
  if (d != nullptr) {
    // p_s - p_t = (e_s - e_t r) / sum_s with r = sum_s / sum_t: exactly 0 when the rows are
    // identical (r == 1), whether or not the compiler fuses the multiply-add.
    const float k = float(double(gs) * tt / sum_s);
    const float r = float(sum_s / sum_t);
    int64_t j = 0;
    for (; j + kLanes <= V; j += kLanes) {
      const VecF es = vec::exp_nonpositive((vec::load(zs + j) - ms) * inv_t);
      const VecF et = vec::exp_nonpositive((vec::load(zt + j) - mt) * inv_t);
      vec::store(d + j, (es - et * r) * k);
    }
    if (j < V) {
      const VecF es = vec::exp_nonpositive((load_partial(zs + j, V - j, -INFINITY) - ms) * inv_t);
      const VecF et = vec::exp_nonpositive((load_partial(zt + j, V - j, -INFINITY) - mt) * inv_t);
      float buf[kLanes];
      vec::store(buf, (es - et * r) * k);
      for (int64_t i = 0; j + i < V; ++i) d[j + i] = buf[i];
    }
  }
  // log p_t - log p_s = (t - s) / T - (mt - ms) / T - (log sum_t - log sum_s).
  const double shift = (double(mt) - double(ms)) / tt + (std::log(sum_t) - std::log(sum_s));
  return tt * tt * (cross / sum_t - shift);
}

#pragma GCC diagnostic pop

}  // namespace

Status segment_mean(float* out, const float* x, int64_t rows, int64_t C, const int32_t* begin,
                    const int32_t* end, int64_t n) {
  int64_t work = 0;
  const Status st = check_segment_args(out, x, rows, C, begin, end, n, &work);
  if (st != Status::kOk) return st;
#pragma omp parallel for schedule(static) if (work * C >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const double inv = 1.0 / double(end[i] - begin[i]);
    for (int64_t c0 = 0; c0 < C; c0 += kColBlock) {
      const int64_t w = std::min(kColBlock, C - c0);
      double acc[kColBlock] = {};
      for (int64_t r = begin[i]; r < end[i]; ++r) {
        const float* xr = x + r * C + c0;
        for (int64_t c = 0; c < w; ++c) acc[c] += double(xr[c]);
      }
      for (int64_t c = 0; c < w; ++c) out[i * C + c0 + c] = float(acc[c] * inv);
    }
  }
  return Status::kOk;
}

Status segment_mean_backward(float* dx, const float* dout, int64_t rows, int64_t C,
                             const int32_t* begin, const int32_t* end, int64_t n) {
  int64_t work = 0;
  const Status st = check_segment_args(dx, dout, rows, C, begin, end, n, &work);
  if (st != Status::kOk) return st;
  const int64_t blocks = (C + kColBlock - 1) / kColBlock;
  // Each column block is owned by one thread and visits ranges in order: overlapping ranges
  // accumulate without races, in the same order for any thread count.
#pragma omp parallel for schedule(static) if (work * C >= kParallelMin && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColBlock;
    const int64_t w = std::min(kColBlock, C - c0);
    for (int64_t i = 0; i < n; ++i) {
      const double inv = 1.0 / double(end[i] - begin[i]);
      float g[kColBlock];
      for (int64_t c = 0; c < w; ++c) g[c] = float(double(dout[i * C + c0 + c]) * inv);
      for (int64_t r = begin[i]; r < end[i]; ++r) {
        float* dr = dx + r * C + c0;
        for (int64_t c = 0; c < w; ++c) dr[c] += g[c];
      }
    }
  }
  return Status::kOk;
}

// â, b̂ (P x D each), S and S^T (P x P each), then per row: inverse norms and clamp flags
// for a and b (4P), row and column losses (2 x 2P, doubles), row and column hits (2P).
size_t info_nce_scratch_floats(int64_t P, int64_t D) {
  if (P <= 0 || D <= 0) return 0;
  return 2 * size_t(P) * size_t(D) + 2 * size_t(P) * size_t(P) + 10 * size_t(P);
}

Status info_nce(const float* a, const float* b, int64_t P, int64_t D, float temperature,
                double* loss, int64_t* correct_ab, int64_t* correct_ba, float grad_scale, float* da,
                float* db, float* scratch, size_t scratch_floats) {
  if (a == nullptr || b == nullptr || loss == nullptr || scratch == nullptr || P < 2 || D <= 0 ||
      !valid_temperature(temperature)) {
    return Status::kInvalidArgument;
  }
  if ((da == nullptr) != (db == nullptr)) return Status::kInvalidArgument;
  if (P > INT_MAX || D > INT_MAX) return Status::kNotSupported;
  if (scratch_floats < info_nce_scratch_floats(P, D)) return Status::kInvalidArgument;

  const bool backward = da != nullptr;
  float* ah = scratch;
  float* bh = ah + P * D;
  float* S = bh + P * D;    // S, then (softmax rows - I), then the gradient G
  float* ST = S + P * P;    // S^T, then (softmax rows of S^T - I)
  float* inv_a = ST + P * P;
  float* inv_b = inv_a + P;
  float* clamp_a = inv_b + P;
  float* clamp_b = clamp_a + P;
  float* row_loss = clamp_b + P;  // P doubles
  float* col_loss = row_loss + 2 * P;  // P doubles
  float* row_hit = col_loss + 2 * P;
  float* col_hit = row_hit + P;

  normalise_rows(a, ah, inv_a, clamp_a, P, D);
  normalise_rows(b, bh, inv_b, clamp_b, P, D);
  Status st = gemm(false, true, P, P, D, 1.0f / temperature, ah, D, bh, D, 0.0f, S, P);
  if (st != Status::kOk) return st;

#pragma omp parallel for schedule(static) if (P * P >= kParallelMin)
  for (int64_t j = 0; j < P; ++j) {
    for (int64_t i = 0; i < P; ++i) ST[j * P + i] = S[i * P + j];
  }
#pragma omp parallel for schedule(static) if (P * P >= kParallelMin)
  for (int64_t i = 0; i < 2 * P; ++i) {  // rows of S (a -> b), then rows of S^T (b -> a)
    const bool col = i >= P;
    const int64_t k = col ? i - P : i;
    double l;
    xent_row((col ? ST : S) + k * P, P, k, backward, &l, (col ? col_hit : row_hit) + k);
    put_double(col ? col_loss : row_loss, k, l);
  }

  double total = 0.0;
  int64_t hits_ab = 0, hits_ba = 0;
  for (int64_t i = 0; i < P; ++i) {
    total += get_double(row_loss, i) + get_double(col_loss, i);
    hits_ab += row_hit[i] != 0.0f;
    hits_ba += col_hit[i] != 0.0f;
  }
  *loss = total / double(2 * P);
  if (correct_ab != nullptr) *correct_ab = hits_ab;
  if (correct_ba != nullptr) *correct_ba = hits_ba;
  if (!backward) return Status::kOk;

  // dL/dS[i,j] = (rowsoftmax - I)[i,j] + (colsoftmax - I)[i,j], over 2P; S = âb̂^T / T.
  const float k = float(double(grad_scale) / (2.0 * double(P) * double(temperature)));
#pragma omp parallel for schedule(static) if (P * P >= kParallelMin)
  for (int64_t i = 0; i < P; ++i) {
    for (int64_t j = 0; j < P; ++j) S[i * P + j] = k * (S[i * P + j] + ST[j * P + i]);
  }
  st = gemm(false, false, P, D, P, 1.0f, S, P, bh, D, 0.0f, da, D);  // dâ = G b̂
  if (st != Status::kOk) return st;
  st = gemm(true, false, P, D, P, 1.0f, S, P, ah, D, 0.0f, db, D);   // db̂ = G^T â
  if (st != Status::kOk) return st;
  normalise_backward(da, ah, inv_a, clamp_a, P, D);
  normalise_backward(db, bh, inv_b, clamp_b, P, D);
  return Status::kOk;
}

Status mse_rows(const float* pred, const float* target, int64_t n, int64_t D, double* loss_sum,
                float grad_scale, float* dpred) {
  if (loss_sum == nullptr || n < 0 || D <= 0) return Status::kInvalidArgument;
  if (n > 0 && (pred == nullptr || target == nullptr)) return Status::kInvalidArgument;
  const float k = float(2.0 * double(grad_scale) / double(D));
  double total = 0.0;
  double row_loss[kRowBlock];
  for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, n - r0);
#pragma omp parallel for schedule(static) if (rb * D >= kParallelMin)
    for (int64_t r = 0; r < rb; ++r) {
      const int64_t off = (r0 + r) * D;
      double s = 0.0;
      for (int64_t v = 0; v < D; ++v) {
        const double diff = double(pred[off + v]) - double(target[off + v]);
        s += diff * diff;
        if (dpred != nullptr) dpred[off + v] = k * (pred[off + v] - target[off + v]);
      }
      row_loss[r] = s / double(D);
    }
    for (int64_t r = 0; r < rb; ++r) total += row_loss[r];
  }
  *loss_sum = total;
  return Status::kOk;
}

Status kl_distill(const float* student, const float* teacher, const int32_t* mask, int64_t n,
                  int64_t V, float temperature, double* loss_sum, int64_t* count,
                  float grad_scale, float* dstudent) {
  if (loss_sum == nullptr || count == nullptr || n < 0 || V <= 0 ||
      !valid_temperature(temperature)) {
    return Status::kInvalidArgument;
  }
  if (n > 0 && (student == nullptr || teacher == nullptr)) return Status::kInvalidArgument;
  double total = 0.0;
  int64_t used = 0;
  double row_loss[kRowBlock];
  for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
    const int64_t rb = std::min(kRowBlock, n - r0);
#pragma omp parallel for schedule(static) if (rb * V >= kParallelMin)
    for (int64_t r = 0; r < rb; ++r) {
      const int64_t i = r0 + r;
      float* d = dstudent != nullptr ? dstudent + i * V : nullptr;
      if (mask != nullptr && mask[i] < 0) {
        row_loss[r] = 0.0;
        if (d != nullptr) std::memset(d, 0, size_t(V) * sizeof(float));
        continue;
      }
      row_loss[r] = kl_row(student + i * V, teacher + i * V, V, temperature, grad_scale, d);
    }
    for (int64_t r = 0; r < rb; ++r) {
      total += row_loss[r];
      used += mask == nullptr || mask[r0 + r] >= 0;
    }
  }
  *loss_sum = total;
  *count = used;
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
