// Causal grouped-query attention on the CPU, flash-attention style: each thread takes a
// block of query rows, forms its scores against the keys up to the block's end with one
// sgemm, softmaxes them in place and multiplies by V; backward recomputes P from the
// saved log-sum-exp. Forward runs over (batch, head, query block); backward over
// (batch, kv head) so that each kv head's dK/dV is summed by one thread in a fixed order.
#include "kernels/cpu/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "kernels/cpu/vec_math.h"

namespace castor::kernels::cpu {
namespace {

// Query rows per tile: large enough for sgemm to run near peak, small enough that the
// causal waste (keys past the diagonal inside the block) stays small.
constexpr int64_t kBlockRows = 64;

int64_t block_rows(const AttentionShape& s) { return std::min<int64_t>(kBlockRows, s.T); }

// Per-thread tiles: scores/probabilities (bq x T) and dP/dS (bq x T).
size_t per_thread_floats(const AttentionShape& s) {
  return size_t(2 * block_rows(s) * s.T);
}

bool valid_shape(const AttentionShape& s) {
  return s.B > 0 && s.T > 0 && s.H > 0 && s.KVH > 0 && s.D > 0 && s.H % s.KVH == 0 &&
         s.T <= INT_MAX && (s.H + 2 * s.KVH) * s.D <= INT_MAX;  // cblas takes int sizes
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // the vector types never cross this file's boundary

// Shared SIMD helpers (vec_math.h); softmax_grad_row and dot below are this file's own.
using vec::exp_nonpositive;
using vec::exp_shift_sum;
using vec::hsum;
using vec::kLanes;
using vec::load;
using vec::row_max;
using vec::store;
using vec::VecF;

// p[j] = exp(p[j] - lse) (the probabilities), ds[j] = p[j] * (ds[j] - di) for j < n,
// where ds holds dP on entry.
inline void softmax_grad_row(float* p, float* ds, int64_t n, float lse, float di) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const VecF e = exp_nonpositive(load(p + j) - lse);
    store(p + j, e);
    store(ds + j, e * (load(ds + j) - di));
  }
  if (j < n) {  // tail through padded vectors, same math
    float pb[kLanes], db[kLanes];
    for (int64_t i = 0; i < kLanes; ++i) {
      pb[i] = j + i < n ? p[j + i] : -INFINITY;
      db[i] = j + i < n ? ds[j + i] : 0.0f;
    }
    const VecF e = exp_nonpositive(load(pb) - lse);
    store(pb, e);
    store(db, e * (load(db) - di));
    for (int64_t i = 0; j + i < n; ++i) {
      p[j + i] = pb[i];
      ds[j + i] = db[i];
    }
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  VecF acc{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) acc += load(a + j) * load(b + j);
  float s = hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

#pragma GCC diagnostic pop

// Threads the kernels run on: omp_get_max_threads(), fewer if the caller's scratch holds
// tiles for fewer (results do not depend on the count).
int threads_for(size_t scratch_floats, size_t per_thread) {
  const size_t fit = scratch_floats / per_thread;
  return static_cast<int>(std::min<size_t>(fit, size_t(omp_get_max_threads())));
}

}  // namespace

size_t attention_scratch_floats(const AttentionShape& s, int threads) {
  if (!valid_shape(s)) return 0;
  return per_thread_floats(s) * size_t(std::max(threads, 1));
}

// First key query t of row b may see: key_begin clamped to [0, t].
inline int64_t first_key(const int32_t* key_begin, int64_t b, int64_t T, int64_t t) {
  return key_begin ? std::clamp<int64_t>(key_begin[b * T + t], 0, t) : 0;
}

Status attention_forward(float* out, float* lse, const float* qkv, const AttentionShape& s,
                         float* scratch, size_t scratch_floats, const int32_t* key_begin) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (out == nullptr || lse == nullptr || qkv == nullptr || scratch == nullptr)
    return Status::kInvalidArgument;
  const size_t per_thread = per_thread_floats(s);
  const int threads = threads_for(scratch_floats, per_thread);
  if (threads < 1) return Status::kInvalidArgument;

  const int64_t B = s.B, T = s.T, H = s.H, D = s.D, group = s.H / s.KVH;
  const int64_t ld = (s.H + 2 * s.KVH) * D;  // qkv row stride
  const int64_t ldo = H * D;                 // out row stride
  const int64_t bq = block_rows(s);
  const int64_t nblocks = (T + bq - 1) / bq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t items = B * H * nblocks;

#pragma omp parallel num_threads(threads)
  {
    float* S = scratch + size_t(omp_get_thread_num()) * per_thread;
    // Items run heaviest (last query block) first so the dynamic schedule balances.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t blk = nblocks - 1 - item % nblocks;
      const int64_t bh = item / nblocks;
      const int64_t b = bh / H, h = bh % H, kvh = h / group;
      const int64_t i0 = blk * bq, rows = std::min(bq, T - i0), n = i0 + rows;
      const float* q = qkv + (b * T + i0) * ld + h * D;
      const float* k = qkv + b * T * ld + (H + kvh) * D;
      const float* v = qkv + b * T * ld + (H + s.KVH + kvh) * D;

      // S = scale * Q_blk K[0:n]^T  (rows x n)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(D), scale, q,
                  int(ld), k, int(ld), 0.0f, S, int(n));
      float* lse_bh = lse + (b * H + h) * T;
      for (int64_t r = 0; r < rows; ++r) {
        float* row = S + r * n;
        const int64_t len = i0 + r + 1;  // causal: keys lo..i
        const int64_t lo = first_key(key_begin, b, T, i0 + r);
        const float m = row_max(row + lo, len - lo);
        const float sum = exp_shift_sum(row + lo, len - lo, m);
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
        for (int64_t j = lo; j < len; ++j) row[j] *= inv;
        for (int64_t j = len; j < n; ++j) row[j] = 0.0f;
        lse_bh[i0 + r] = m + std::log(sum);
      }
      // O_blk = P V[0:n]  (rows x D)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(D), int(n), 1.0f, S,
                  int(n), v, int(ld), 0.0f, out + (b * T + i0) * ldo + h * D, int(ldo));
    }
  }
  return Status::kOk;
}

Status attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, const AttentionShape& s, float* scratch,
                          size_t scratch_floats, const int32_t* key_begin) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (dqkv == nullptr || dout == nullptr || qkv == nullptr || out == nullptr || lse == nullptr ||
      scratch == nullptr)
    return Status::kInvalidArgument;
  const size_t per_thread = per_thread_floats(s);
  const int threads = threads_for(scratch_floats, per_thread);
  if (threads < 1) return Status::kInvalidArgument;

  const int64_t B = s.B, T = s.T, H = s.H, KVH = s.KVH, D = s.D, group = s.H / s.KVH;
  const int64_t ld = (H + 2 * KVH) * D;
  const int64_t ldo = H * D;
  const int64_t bq = block_rows(s);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t items = B * KVH;

#pragma omp parallel num_threads(threads)
  {
    float* P = scratch + size_t(omp_get_thread_num()) * per_thread;
    float* dS = P + bq * T;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / KVH, kvh = item % KVH;
      const float* k = qkv + b * T * ld + (H + kvh) * D;
      const float* v = qkv + b * T * ld + (H + KVH + kvh) * D;
      float* dk = dqkv + b * T * ld + (H + kvh) * D;
      float* dv = dqkv + b * T * ld + (H + KVH + kvh) * D;
      for (int64_t t = 0; t < T; ++t) {
        std::memset(dk + t * ld, 0, size_t(D) * sizeof(float));
        std::memset(dv + t * ld, 0, size_t(D) * sizeof(float));
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* lse_bh = lse + (b * H + h) * T;
        for (int64_t i0 = 0; i0 < T; i0 += bq) {
          const int64_t rows = std::min(bq, T - i0), n = i0 + rows;
          const float* q = qkv + (b * T + i0) * ld + h * D;
          const float* o = out + (b * T + i0) * ldo + h * D;
          const float* dob = dout + (b * T + i0) * ldo + h * D;
          float* dq = dqkv + (b * T + i0) * ld + h * D;

          // P = exp(scale * Q K^T - lse), dP = dO V^T  (rows x n each)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(D), scale,
                      q, int(ld), k, int(ld), 0.0f, P, int(n));
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(D), 1.0f,
                      dob, int(ldo), v, int(ld), 0.0f, dS, int(n));
          for (int64_t r = 0; r < rows; ++r) {
            const float di = dot(dob + r * ldo, o + r * ldo, D);  // rowsum(dO * O)
            float* prow = P + r * n;
            float* dsrow = dS + r * n;
            const int64_t len = i0 + r + 1;
            const int64_t lo = first_key(key_begin, b, T, i0 + r);
            softmax_grad_row(prow + lo, dsrow + lo, len - lo, lse_bh[i0 + r], di);
            for (int64_t j = 0; j < lo; ++j) {
              prow[j] = 0.0f;
              dsrow[j] = 0.0f;
            }
            for (int64_t j = len; j < n; ++j) {
              prow[j] = 0.0f;
              dsrow[j] = 0.0f;
            }
          }
          // dV[0:n] += P^T dO_blk;  dQ_blk = scale * dS K[0:n];  dK[0:n] += scale * dS^T Q_blk
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(n), int(D), int(rows), 1.0f, P,
                      int(n), dob, int(ldo), 1.0f, dv, int(ld));
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(D), int(n), scale,
                      dS, int(n), k, int(ld), 0.0f, dq, int(ld));
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(n), int(D), int(rows), scale,
                      dS, int(n), q, int(ld), 1.0f, dk, int(ld));
        }
      }
    }
  }
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
