// LM head + softmax cross-entropy, a chunk of rows at a time: one multi-threaded sgemm
// forms the chunk's logits, an OpenMP loop over rows turns each into probabilities (in
// place) and then into dlogits, and two more sgemms push dlogits into dx and dW. Row
// losses are kept per row and summed serially in double, so the result depends only on
// the chunk size, never on the thread count.
#include "kernels/cpu/lm_head_xent.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "kernels/cpu/vec_math.h"

namespace castor::kernels::cpu {

// Logits/dlogits tile (chunk_rows x V), then one double per row for its loss.
size_t lm_head_xent_scratch_floats(int64_t chunk_rows, int64_t V) {
  if (chunk_rows <= 0 || V <= 0) return 0;
  return size_t(chunk_rows) * size_t(V) + 2 * size_t(chunk_rows);
}

Status lm_head_xent(XentResult* result, const float* x, const float* w, const int32_t* targets,
                    int64_t N, int64_t C, int64_t V, float grad_scale, float* dx, float* dw,
                    float* scratch, int64_t chunk_rows, const float* row_scale, double* row_losses) {
  if (result == nullptr || N < 0 || C <= 0 || V <= 0 || chunk_rows <= 0) {
    return Status::kInvalidArgument;
  }
  if (C > INT_MAX || V > INT_MAX || chunk_rows > INT_MAX) return Status::kInvalidArgument;
  if (N > 0 && (x == nullptr || w == nullptr || targets == nullptr || scratch == nullptr)) {
    return Status::kInvalidArgument;
  }
  if (dx != nullptr && dw == nullptr) return Status::kInvalidArgument;
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < -1 || targets[i] >= V) return Status::kOutOfRange;
  }

  const bool backward = dx != nullptr;
  float* logits = scratch;
  float* row_loss_bytes = scratch + chunk_rows * V;  // chunk_rows doubles, via memcpy
  double loss_sum = 0.0;
  int64_t count = 0;

  for (int64_t c0 = 0; c0 < N; c0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, N - c0);
    const float* xc = x + c0 * C;
    const int32_t* tc = targets + c0;

    // logits = x_chunk W^T  (rows x V); OpenBLAS threads this call itself.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(V), int(C), 1.0f, xc,
                int(C), w, int(C), 0.0f, logits, int(V));

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits + r * V;
      const int32_t t = tc[r];
      double loss = 0.0;
      if (t < 0) {
        if (backward) std::memset(row, 0, size_t(V) * sizeof(float));
      } else {
        const float target_logit = row[t];
        const float m = vec::row_max(row, V);
        const float sum = vec::exp_shift_sum(row, V, m);  // row = exp(logit - m)
        loss = double(m) + std::log(double(sum)) - double(target_logit);
        if (backward) {  // dlogits = grad_scale * (p - onehot(t))
          const float g = row_scale ? grad_scale * row_scale[c0 + r] : grad_scale;
          const float k = g / sum;
          for (int64_t j = 0; j < V; ++j) row[j] *= k;
          row[t] -= g;
        }
      }
      std::memcpy(row_loss_bytes + 2 * r, &loss, sizeof loss);
    }

    for (int64_t r = 0; r < rows; ++r) {  // fixed order: independent of the thread count
      double loss;
      std::memcpy(&loss, row_loss_bytes + 2 * r, sizeof loss);
      loss_sum += loss;
      count += tc[r] >= 0;
      if (row_losses) row_losses[c0 + r] = loss;
    }

    if (backward) {
      // dx_chunk = dlogits W  (rows x C);  dW += dlogits^T x_chunk  (V x C)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(C), int(V), 1.0f,
                  logits, int(V), w, int(C), 0.0f, dx + c0 * C, int(C));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(V), int(C), int(rows), 1.0f,
                  logits, int(V), xc, int(C), 1.0f, dw, int(C));
    }
  }
  result->loss_sum = loss_sum;
  result->count = count;
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
