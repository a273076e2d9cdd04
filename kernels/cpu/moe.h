// Mixture-of-experts building blocks (docs/model.md, "Mixture-of-experts feed-forward"):
// top-k softmax router and its backward, the balance and z router losses, the dispatch
// plan (a counting sort of assignments by expert, with optional capacity dropping), and
// the permute / combine row gathers that move tokens to and from expert-sorted order.
// Every output row is written by one thread in a fixed order: results do not depend on
// the thread count. Expert ids outside [0, E) give kOutOfRange.
#pragma once
#include <cstdint>

#include "kernels/status.h"

namespace castor::kernels::cpu {

// Router: probs = softmax(logits) per row (N x E, numerically stable); the k experts with the largest probabilities,
// in descending order, ties to the lower expert index -> expert (N x k); gate (N x k) = probs of the chosen experts,
// divided by their sum when renormalize (k >= 2 callers pass true; k == 1 passes false: gate = raw prob).
Status router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                   int32_t* expert, float* gate);

// Backward: dgate (N x k) -> dlogits (N x E), overwritten (=). When renormalize, with S = sum_j probs[e_j]:
// dprobs[e_j] = (dgate_j - sum_i dgate_i * gate_i) / S; else dprobs[e_j] = dgate_j; other experts 0. dprobs_extra
// (N x E, may be nullptr) is added to dprobs before the softmax backward: dlogits = probs * (dprobs - sum_e probs_e
// dprobs_e).
Status router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                            const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                            float* dlogits);

// Load-balancing loss (Switch/GShard): f_e = (# of (n, j) with expert[n*k+j] == e) / (N*k) (before any capacity
// dropping), P_e = mean over n of probs[n*E+e]; *loss = E * sum_e f_e * P_e (double accumulation).
// If dprobs != nullptr: dprobs[n*E+e] += scale * E * f_e / N (f held constant). counts (E, may be nullptr) receives
// the per-expert assignment counts. N must be > 0.
// A batch split over several processes (each holding N of its N_total rows): pass N_total and group_counts, the
// per-expert assignment counts of the whole batch (E); then f and P are the whole batch's, and *loss is this part's
// share of the whole loss (the parts' values sum to it).
Status moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k, double* loss,
                        float scale, float* dprobs, int64_t* counts, int64_t N_total = 0,
                        const int64_t* group_counts = nullptr);

// Assignments per choice and expert: counts (k x E) [j * E + e] = # of n with expert[n*k+j] == e.
Status moe_count_assignments(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t* counts);

// Router z-loss: *loss = (1/N) sum_n logsumexp(logits[n,:])^2; if dlogits != nullptr:
// dlogits[n,e] += scale * 2 * lse_n * softmax(logits[n,:])_e / N. N must be > 0. N_total > 0: divide by N_total
// instead (this process's rows of a split batch; the parts' values sum to the whole loss).
Status router_z_loss(const float* logits, int64_t N, int64_t E, double* loss, float scale, float* dlogits,
                     int64_t N_total = 0);

// Dispatch plan. Assignment a = n*k + j (token n's j-th choice). capacity < 0: no limit (dropless); else each expert
// keeps at most `capacity` assignments, considered choice by choice: every token's j=0 assignment in token order, then
// every j=1 assignment, ...; an assignment that finds its expert full is dropped. Outputs: offsets (E+1):
// offsets[0] = 0, offsets[e+1] - offsets[e] = kept assignments of expert e; slot (N*k): the position of assignment a
// in the expert-sorted order, or -1 if dropped; token_of_slot (room for N*k; M = offsets[E] are written): the token
// of each slot. Within expert e the slots [offsets[e], offsets[e+1]) are in increasing token order. *dropped = dropped
// assignments. O(N*k + E), serial. N*k must fit in int32.
// These N tokens may be one block of a larger batch's token order (processes splitting a batch): before (k x E, may
// be nullptr: none) [j * E + e] = the batch's assignments to expert e that come before this block's j-th choices in
// the order above; capacity then applies to the whole batch, as if it were planned in one piece.
Status moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                int32_t* slot, int32_t* token_of_slot, int64_t* dropped, const int64_t* before = nullptr);

// x_perm[s] = x[token_of_slot[s]] for s < M (rows of C floats).
Status moe_permute(float* x_perm, const float* x, const int32_t* token_of_slot, int64_t M, int64_t C);

// dx[n] (=) sum over kept j (slot[n*k+j] >= 0), in j order, of dx_perm[slot[n*k+j]]; rows of tokens with no kept
// assignment are 0.
Status moe_permute_backward(float* dx, const float* dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C);

// y[n] (=) sum over kept j, in j order, of gate[n*k+j] * y_perm[slot[n*k+j]]; 0 when none kept.
Status moe_combine(float* y, const float* y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                   int64_t C);

// dy_perm[slot[n*k+j]] (=) gate[n*k+j] * dy[n] for kept j; dgate[n*k+j] (=) dot(dy[n], y_perm[slot]) for kept j,
// 0 for dropped ones.
Status moe_combine_backward(float* dy_perm, float* dgate, const float* dy, const float* y_perm, const float* gate,
                            const int32_t* slot, int64_t N, int64_t k, int64_t C);

}  // namespace castor::kernels::cpu
