// Cached attention on the CPU: one work item per (query head, block of new query rows).
// Each item forms its scores against the keys up to the block's last position with one
// sgemm, softmaxes each row over its visible keys in place, and multiplies by V, the same
// steps as attention_forward, so the two agree to float rounding.
#include "kernels/cpu/kv_attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cpu/vec_math.h"

namespace castor::kernels::cpu {
namespace {

constexpr int64_t kBlockRows = 64;

int64_t block_rows(const KvAttentionShape& s) { return std::min<int64_t>(kBlockRows, s.n); }

// Per-thread tile: scores of a block of queries against every key (bq x (past + n)).
size_t per_thread_floats(const KvAttentionShape& s) { return size_t(block_rows(s) * (s.past + s.n)); }

bool valid_shape(const KvAttentionShape& s) {
  return s.past >= 0 && s.n > 0 && s.H > 0 && s.KVH > 0 && s.D > 0 && s.H % s.KVH == 0 && s.past + s.n <= INT_MAX &&
         s.H * s.D <= INT_MAX;  // cblas takes int sizes
}

}  // namespace

size_t attention_decode_scratch_floats(const KvAttentionShape& s, int threads) {
  if (!valid_shape(s)) return 0;
  return per_thread_floats(s) * size_t(std::max(threads, 1));
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // the vector types never cross this file's boundary

Status attention_decode(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, const float* v,
                        int64_t ldkv, const KvAttentionShape& s, float* scratch, size_t scratch_floats,
                        const int32_t* key_begin) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (out == nullptr || q == nullptr || k == nullptr || v == nullptr || scratch == nullptr)
    return Status::kInvalidArgument;
  if (ldo < s.H * s.D || ldq < s.H * s.D || ldkv < s.KVH * s.D || ldo > INT_MAX || ldq > INT_MAX || ldkv > INT_MAX)
    return Status::kInvalidArgument;
  const size_t per_thread = per_thread_floats(s);
  const int threads = int(std::min<size_t>(scratch_floats / per_thread, size_t(omp_get_max_threads())));
  if (threads < 1) return Status::kInvalidArgument;

  const int64_t past = s.past, n = s.n, H = s.H, D = s.D, group = s.H / s.KVH;
  const int64_t bq = block_rows(s);
  const int64_t nblocks = (n + bq - 1) / bq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t items = H * nblocks;
  // A decode step of one token is a few microseconds of work: not worth waking a team.
  const bool team = items > 1 && threads > 1 && double(H) * double(n) * double(past + n) * double(D) > 262144.0;

#pragma omp parallel num_threads(threads) if (team)
  {
    float* S = scratch + size_t(omp_get_thread_num()) * per_thread;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t blk = nblocks - 1 - item % nblocks;  // heaviest blocks first
      const int64_t h = item / nblocks, kvh = h / group;
      const int64_t i0 = blk * bq, rows = std::min(bq, n - i0);
      const int64_t keys = past + i0 + rows;  // keys the block's last query sees
      // S = scale * Q_blk K[0:keys]^T  (rows x keys)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(keys), int(D), scale, q + i0 * ldq + h * D,
                  int(ldq), k + kvh * D, int(ldkv), 0.0f, S, int(keys));
      for (int64_t r = 0; r < rows; ++r) {
        float* row = S + r * keys;
        const int64_t last = past + i0 + r;  // the query's own position
        const int64_t lo = key_begin ? std::clamp<int64_t>(key_begin[i0 + r], 0, last) : 0;
        const int64_t len = last + 1;
        const float m = vec::row_max(row + lo, len - lo);
        const float sum = vec::exp_shift_sum(row + lo, len - lo, m);
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
        for (int64_t j = lo; j < len; ++j) row[j] *= inv;
        for (int64_t j = len; j < keys; ++j) row[j] = 0.0f;
      }
      // O_blk = P V[0:keys]  (rows x D)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(D), int(keys), 1.0f, S, int(keys),
                  v + kvh * D, int(ldkv), 0.0f, out + i0 * ldo + h * D, int(ldo));
    }
  }
  return Status::kOk;
}

#pragma GCC diagnostic pop

Status matvec(float* y, const float* A, int64_t M, int64_t K, int64_t lda, const float* x) {
  if (M < 0 || K < 0 || lda < std::max<int64_t>(K, 1) || M > INT_MAX || K > INT_MAX || lda > INT_MAX)
    return Status::kInvalidArgument;
  if (M == 0) return Status::kOk;
  if (y == nullptr || (K > 0 && (A == nullptr || x == nullptr))) return Status::kInvalidArgument;
  if (K == 0) {
    std::fill(y, y + M, 0.0f);
    return Status::kOk;
  }
  cblas_sgemv(CblasRowMajor, CblasNoTrans, int(M), int(K), 1.0f, A, int(lda), x, 1, 0.0f, y, 1);
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
