// The LM head fused with softmax cross-entropy on a CUDA stream, mirroring
// kernels/cpu/lm_head_xent.h: logits = x W^T a chunk of rows at a time (fp32, in scratch),
// per-row loss, then dlogits = grad_scale * row_scale[row] * (softmax - onehot) in place,
// dx (=) = dlogits W and dw (+=, fp32 grad arena) = dlogits^T x. No (N x V) matrix exists.
// x, w, dx are T (float, bf16 or f16); the result stays on the device (no synchronisation).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// cpu::XentResult in device memory: written (=) by each call, the caller copies it back.
struct XentDeviceResult {
  double loss_sum;  // sum of -log p(target) over counted rows
  int64_t count;    // rows with target >= 0
};

// Scratch bytes for a chunk of rows with storage type of dtype_size bytes (4: float, 2:
// bf16 or f16): fp32 logits, a T copy of dlogits for 16-bit T, one double per row. 0 if
// invalid.
size_t lm_head_xent_scratch_bytes(int64_t chunk_rows, int64_t V, size_t dtype_size);

// As cpu::lm_head_xent with device pointers: x (N, C), w (V, C), targets (N, -1 = ignore),
// dx (N, C) or null (forward only; then dw is not touched), dw (V, C) fp32, row_scale (N)
// or null, row_losses (N doubles) or null. scratch: lm_head_xent_scratch_bytes(chunk_rows,
// V, sizeof(T)) bytes, 16-byte aligned. Targets are not range-checked on the host (they are
// on the device): a target outside [-1, V) makes its row's loss NaN and its gradient zero.
// Rows are summed deterministically: per chunk by a fixed tree, chunks in order.
template <typename T>
Status lm_head_xent(const GemmContext& ctx, XentDeviceResult* result, const T* x, const T* w, const int32_t* targets,
                    int64_t N, int64_t C, int64_t V, float grad_scale, T* dx, float* dw, void* scratch,
                    int64_t chunk_rows, const float* row_scale, double* row_losses, cudaStream_t stream);

}  // namespace castor::kernels::cuda
