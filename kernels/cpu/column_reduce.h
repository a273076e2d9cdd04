// Deterministic column reduction for the CPU kernels (bias and norm-weight gradients):
// the C columns are split into blocks of kColBlock, one OpenMP task per block, and each
// block sums all N rows in order into double accumulators, so the float results are
// bitwise the same whatever the thread count. For kernel .cpp files only.
#pragma once
#include <algorithm>
#include <cstdint>

namespace castor::kernels::cpu {

inline constexpr int64_t kColBlock = 32;  // columns per task of a column reduction

// Sums K column-wise quantities over rows 0..N-1 of an (N, C) layout. For each block,
// add_row(n, c0, width, acc) adds row n's contribution to columns [c0, c0 + width) into
// acc[k][j] (double[K][kColBlock], zeroed per block), rows in order; then
// out[k][c0 + j] += float(acc[k][j]) for each non-null out[k]. parallel: the blocks are
// split over OpenMP threads.
template <int K, typename AddRow>
void accumulate_columns(float* const (&out)[K], int64_t N, int64_t C, bool parallel, AddRow&& add_row) {
  const int64_t blocks = (C + kColBlock - 1) / kColBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColBlock;
    const int64_t width = std::min(kColBlock, C - c0);
    double acc[K][kColBlock] = {};
    for (int64_t n = 0; n < N; ++n) add_row(n, c0, width, acc);
    for (int k = 0; k < K; ++k) {
      if (out[k] == nullptr) continue;
      for (int64_t j = 0; j < width; ++j) out[k][c0 + j] += float(acc[k][j]);
    }
  }
}

}  // namespace castor::kernels::cpu
