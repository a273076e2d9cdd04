// Mixture-of-experts kernels on a CUDA stream, mirroring kernels/cpu/moe.h (the reference):
// top-k router and its backward, balance and z router losses, assignment counts, the dispatch
// plan (bit-identical to the CPU's counting sort, capacity dropping and `before` included) and
// the permute / combine row gathers. Router tensors (logits, probs, gate) are fp32; token rows
// are T (float, bf16 or f16). All pointers are device pointers unless a comment says otherwise.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/types.cuh"
#include "kernels/status.h"

namespace castor::kernels::cuda {

// Conventions beyond kernels/cpu/moe.h:
// - Expert ids, slots and tokens are device data, not validated (the CPU's kOutOfRange cannot
//   be returned): an expert id outside [0, E) counts nowhere and plans as dropped, a slot < -1
//   acts as -1, a negative token gives a zero row. Slots >= M and tokens >= N are not caught.
// - The loss sums (*loss, double on the device) are per-block partials over a row split that
//   depends on N only, summed by a fixed tree: deterministic, not bit-equal to the CPU.
// - Assignment counts use integer atomics (exact, order-independent).
// - M (moe_permute) and the grouped GEMMs need offsets[E] on the host: the caller copies the
//   E + 1 plan offsets to the host once per layer.

// E <= kRouterMaxExperts (else kNotSupported); one warp per row.
inline constexpr int64_t kRouterMaxExperts = 2048;
Status router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                   int32_t* expert, float* gate, cudaStream_t stream);

Status router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                            const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                            float* dlogits, cudaStream_t stream);

// Scratch (device, 8-byte aligned) of moe_balance_loss and router_z_loss: block partials and,
// for the balance loss, the counts when the caller passes neither counts nor group_counts.
size_t moe_loss_scratch_bytes(int64_t E);

// N_total = 0 and group_counts = nullptr: the unsplit batch (the CPU defaults).
Status moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k, double* loss,
                        float scale, float* dprobs, int64_t* counts, int64_t N_total, const int64_t* group_counts,
                        void* scratch, size_t scratch_bytes, cudaStream_t stream);

Status moe_count_assignments(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t* counts,
                             cudaStream_t stream);

Status router_z_loss(const float* logits, int64_t N, int64_t E, double* loss, float scale, float* dlogits,
                     int64_t N_total, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Dispatch plan, the CPU's outputs exactly. k * E <= kPlanMaxBuckets (else kNotSupported).
// `before` (k x E, may be nullptr) is a device array. Three launches over chunks of 2048
// assignments: per-chunk (choice, expert) counts; one block that scans them into the keep
// limits, offsets and per-chunk slot bases; a stable in-chunk ranking that writes slot and
// token_of_slot. O(N*k + chunks*k*E) work; scratch from moe_plan_scratch_bytes (4-byte aligned).
inline constexpr int64_t kPlanMaxBuckets = 4096;
size_t moe_plan_scratch_bytes(int64_t N, int64_t E, int64_t k);
Status moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                int32_t* slot, int32_t* token_of_slot, int64_t* dropped, const int64_t* before, void* scratch,
                size_t scratch_bytes, cudaStream_t stream);

// Row gathers (rows of C elements of T, fp32 sums); M = offsets[E] from the host.
template <typename T>
Status moe_permute(T* x_perm, const T* x, const int32_t* token_of_slot, int64_t M, int64_t C, cudaStream_t stream);

template <typename T>
Status moe_permute_backward(T* dx, const T* dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C,
                            cudaStream_t stream);

template <typename T>
Status moe_combine(T* y, const T* y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k, int64_t C,
                   cudaStream_t stream);

template <typename T>
Status moe_combine_backward(T* dy_perm, float* dgate, const T* dy, const T* y_perm, const float* gate,
                            const int32_t* slot, int64_t N, int64_t k, int64_t C, cudaStream_t stream);

}  // namespace castor::kernels::cuda
