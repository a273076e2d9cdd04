// Token (+ learned position) embedding, forward and backward (see embedding.h).
// Forward splits rows over threads. Backward splits channels (column blocks) over
// threads, and each thread walks all rows in order, so no two threads touch the same
// float of dwte and the sums do not depend on the thread count; dwpe is split by row.
#include "kernels/cpu/embedding.h"

#include <algorithm>

namespace castor::kernels::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // floats below which a loop stays serial
constexpr int64_t kColBlock = 32;          // channels per backward task

Status check_args(const void* a, const void* b, const int32_t* ids, int64_t N, int64_t T,
                  int64_t C, int64_t V) {
  if (N < 0 || T <= 0 || C < 0 || V < 0 || N % T != 0) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  if (a == nullptr || b == nullptr || ids == nullptr) return Status::kInvalidArgument;
  for (int64_t n = 0; n < N; ++n) {
    if (ids[n] < 0 || ids[n] >= V) return Status::kOutOfRange;
  }
  return Status::kOk;
}

}  // namespace

Status embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe,
                         int64_t N, int64_t T, int64_t C, int64_t V, int64_t v_begin, int64_t v_count) {
  if (Status s = check_args(out, wte, ids, N, T, C, V); s != Status::kOk) return s;
  if (v_count < 0) v_count = V;
  if (v_begin < 0 || v_begin + v_count > V) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* o = out + n * C;
    const int64_t id = int64_t(ids[n]) - v_begin;
    if (id < 0 || id >= v_count) {  // another rank's vocabulary
      if (wpe != nullptr)
        std::copy(wpe + (n % T) * C, wpe + (n % T) * C + C, o);
      else
        std::fill(o, o + C, 0.0f);
      continue;
    }
    const float* e = wte + id * C;
    if (wpe != nullptr) {
      const float* p = wpe + (n % T) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] = e[c] + p[c];
    } else {
      std::copy(e, e + C, o);
    }
  }
  return Status::kOk;
}

Status embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                          int64_t N, int64_t T, int64_t C, int64_t V, int64_t v_begin, int64_t v_count) {
  if (Status s = check_args(dwte, dout, ids, N, T, C, V); s != Status::kOk) return s;
  if (v_count < 0) v_count = V;
  if (v_begin < 0 || v_begin + v_count > V) return Status::kInvalidArgument;
  if (N == 0 || C == 0) return Status::kOk;
  const int64_t blocks = (C + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColBlock;
    const int64_t w = std::min(kColBlock, C - c0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t id = int64_t(ids[n]) - v_begin;
      if (id < 0 || id >= v_count) continue;
      float* d = dwte + id * C + c0;
      const float* g = dout + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) d[j] += g[j];
    }
  }
  if (dwpe != nullptr) {
    const int64_t B = N / T;
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t t = 0; t < T; ++t) {
      float* d = dwpe + t * C;
      for (int64_t b = 0; b < B; ++b) {
        const float* g = dout + (b * T + t) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] += g[c];
      }
    }
  }
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
