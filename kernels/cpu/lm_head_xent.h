// The LM head fused with softmax cross-entropy: logits = x W^T are formed a chunk of rows
// at a time, turned into probabilities, loss and gradient, and dropped; no (N x V)
// matrix ever exists. x: (N, C) final hidden states; w: (V, C); targets: (N) with -1 =
// ignore. Returns the summed loss over non-ignored rows and their count.
// If dx != nullptr: dx (=) and dw (+=) get grad_scale * d(loss_sum)/d(.), each row's part
// further multiplied by row_scale[row] when given (e.g. separately weighted loss terms).
// row_losses (N doubles, optional) receives each row's loss (0 for ignored rows).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

struct XentResult {
  double loss_sum = 0.0;  // sum of -log p(target) over counted rows
  int64_t count = 0;      // rows with target >= 0
};

// Scratch floats needed for a given chunk of rows.
size_t lm_head_xent_scratch_floats(int64_t chunk_rows, int64_t V);

Status lm_head_xent(XentResult* result, const float* x, const float* w, const int32_t* targets,
                    int64_t N, int64_t C, int64_t V, float grad_scale, float* dx, float* dw,
                    float* scratch, int64_t chunk_rows, const float* row_scale = nullptr,
                    double* row_losses = nullptr);

}  // namespace castor::kernels::cpu
