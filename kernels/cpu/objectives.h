// Auxiliary training objectives (docs/model.md "Losses"): mean pooling of row ranges for the
// contrastive pairs, symmetric InfoNCE (CLIP), per-row squared error for reconstruction and
// temperature-scaled KL distillation. Loss sums accumulate in double, per row, and are summed
// serially in row order, so every result is independent of the thread count.
// Gradients overwrite (=) their outputs unless stated otherwise.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// out[i] (C floats) = mean of rows x[begin[i] .. end[i]-1] (row stride C), i < n. Ranges may
// overlap. kInvalidArgument: an empty range (end <= begin); kOutOfRange: begin < 0 or
// end > rows. Validation happens before anything is written.
Status segment_mean(float* out, const float* x, int64_t rows, int64_t C, const int32_t* begin,
                    const int32_t* end, int64_t n);

// dx[r] += dout[i] / (end[i] - begin[i]) for every row r of range i (accumulates). Ranges may
// overlap: the work is split over column blocks and each block visits ranges i = 0..n-1 in
// order, so overlapping ranges add up correctly and the bits do not depend on the thread
// count. Same validation as segment_mean.
Status segment_mean_backward(float* dx, const float* dout, int64_t rows, int64_t C,
                             const int32_t* begin, const int32_t* end, int64_t n);

// Symmetric InfoNCE over P >= 2 pairs. a, b: (P x D) unnormalised embeddings; â, b̂ their rows
// divided by max(||row||, 1e-12); S = â b̂^T / temperature (P x P);
// *loss = (1/(2P)) sum_i [-log softmax(S[i,:])_i - log softmax(S[:,i])_i].
// *correct_ab / *correct_ba (each may be nullptr): rows i with argmax_j S[i,j] == i / columns j
// with argmax_i S[i,j] == j, ties to the lower index.
// If da != nullptr (then db != nullptr too): da, db (=) grad_scale * d(*loss)/d(a, b) through
// the normalisation (a row whose norm is clamped gets grad / 1e-12, the clamp's derivative).
// kInvalidArgument: P < 2, D <= 0, temperature not finite and > 0, null a/b/loss/scratch,
// exactly one of da/db null, scratch_floats < info_nce_scratch_floats(P, D).
size_t info_nce_scratch_floats(int64_t P, int64_t D);
Status info_nce(const float* a, const float* b, int64_t P, int64_t D, float temperature,
                double* loss, int64_t* correct_ab, int64_t* correct_ba, float grad_scale, float* da,
                float* db, float* scratch, size_t scratch_floats);

// *loss_sum = sum over n rows of mean over D of (pred - target)^2;
// if dpred != nullptr: dpred (=) grad_scale * 2 (pred - target) / D.
Status mse_rows(const float* pred, const float* target, int64_t n, int64_t D, double* loss_sum,
                float grad_scale, float* dpred);

// Distillation over rows whose mask >= 0 (mask == nullptr: every row). Per row of V logits,
// p_t = softmax(teacher/T), p_s = softmax(student/T), row loss = T^2 sum_v p_t (log p_t -
// log p_s). *loss_sum = sum of row losses, *count = rows used; if dstudent != nullptr:
// dstudent (=) grad_scale * T * (p_s - p_t) on used rows and 0 on the others.
// Identical student and teacher rows give exactly 0 loss and 0 gradient.
// kInvalidArgument: n < 0, V <= 0, temperature not finite and > 0, null pointers.
Status kl_distill(const float* student, const float* teacher, const int32_t* mask, int64_t n,
                  int64_t V, float temperature, double* loss_sum, int64_t* count,
                  float grad_scale, float* dstudent);

}  // namespace castor::kernels::cpu
