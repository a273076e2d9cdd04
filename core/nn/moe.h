// Mixture-of-experts feed-forward (docs/model.md): router -> top-k gates -> dispatch ->
// one GEMM per expert over its rows -> combine, plus an optional shared expert. The
// router's balance and z losses are computed in forward (values in stats()) and their
// gradients, weighted by pass.balance_scale / pass.z_scale, join the gate gradients in
// backward. Token movement goes through a TokenDispatcher (local here; all-to-all under
// expert parallelism), so the module reads the same in either case.
// On the cpu backend the experts run as one OpenMP region per pass: each expert's rows are cut into row
// blocks and its weight gradients into output blocks, a fixed split that depends only on
// the loads, and the threads take the blocks (largest first) with single-threaded GEMMs.
// The router's small GEMMs run single-threaded too, so apart from the shared expert (an Mlp
// like the dense layers') no result of this module depends on the thread count
// (bench/NOTES.md, "moe-s"). On other backends (and when asked, for tests) every step goes
// through backend.ops() instead: the MoE kernels of kernels/cuda, one GEMM per expert and
// phase; that path holds the whole batch on one process (no token groups, no ep).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/nn/mlp.h"
#include "core/nn/token_dispatcher.h"
#include "core/nn/token_group.h"
#include "kernels/status.h"

namespace castor::nn {

// What one MoE forward measured (for the log and the loss terms).
struct MoeStats {
  double balance = 0.0;   // E * sum_e f_e P_e
  double router_z = 0.0;  // mean logsumexp^2
  int64_t assignments = 0, dropped = 0;
  int64_t min_load = 0, max_load = 0;  // kept assignments of the least / most loaded expert
  // Wall time of the last forward and backward by phase, in ms (bench/moe_s.sh). Forward: route = router
  // GEMM, softmax/top-k and both losses; plan = dispatch plan; dispatch = gather of expert rows; experts =
  // the expert feed-forwards; combine = gated sum back per token; shared = shared expert. Backward: the same
  // phases in reverse (route = router losses and top-k backward plus the two router GEMMs).
  struct Times {
    double route = 0, plan = 0, dispatch = 0, experts = 0, combine = 0, shared = 0;
    double total() const { return route + plan + dispatch + experts + combine + shared; }
  };
  Times fwd_ms, bwd_ms;
};

class Moe final : public Module {
 public:
  // prefix: "model.layers.3.block_sparse_moe" (llama) or "transformer.h.3.mlp" (gpt2).
  // group (may be nullptr: one process): the processes holding the other blocks of the rows
  // (forward's x is this process's block; statistics are the whole batch's).
  Moe(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows, const std::string& prefix,
      float down_init_std, std::unique_ptr<TokenDispatcher> dispatcher = nullptr, TokenGroup* group = nullptr,
      bool ops_path = false);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;
  const MoeStats& stats() const { return stats_; }

 private:
  // One block of expert work: rows [begin, begin + count) of the expert-sorted order, or
  // output rows/columns [begin, begin + count) of a weight gradient.
  enum class Work : int32_t { kForward, kBackwardIn, kGradDown, kBackwardOut, kGradUp };
  struct Task {
    int64_t cost;  // multiply-adds / C, for largest-first order
    Work work;
    int32_t e;
    int64_t begin, count;
  };
  void add_row_tasks(std::vector<Task>& tasks, Work work, int64_t per_row);
  void add_grad_tasks(std::vector<Task>& tasks, Work work, int64_t cols);
  void run_tasks(std::vector<Task>* phases, int n_phases);
  kernels::Status run_task(const Task& t);
  kernels::Status expert_forward(int64_t e, int64_t r0, int64_t rows);
  // Backward of expert e's rows [r0, r0 + rows): d output -> d hidden (in), d hidden -> d input (out).
  kernels::Status expert_backward_in(int64_t e, int64_t r0, int64_t rows);
  kernels::Status expert_backward_out(int64_t e, int64_t r0, int64_t rows);
  // Weight gradients of expert e: columns [c0, c0 + n) of the down matrix (with the down bias
  // when c0 = 0), rows [u0, u0 + n) of the up matrix (with the up bias when u0 = 0).
  kernels::Status expert_grad_down(int64_t e, int64_t c0, int64_t n);
  kernels::Status expert_grad_up(int64_t e, int64_t u0, int64_t n);

  void reserve_rows(int64_t rows);
  Buffer floats(int64_t n) const;  // a buffer of n floats (at least one)
  Buffer acts(int64_t n) const;    // n activations (at least one) in the backend's activation type
  // The backend-ops path (see the header comment).
  Tensor forward_ops(const Pass& pass, Tensor x);
  Tensor backward_ops(const Pass& pass, Tensor dy);
  // For each local expert with rows: f(e, first row, rows), in expert order.
  template <typename F>
  void for_experts(F&& f) const;
  void group_statistics();

  Backend& backend_;
  Ops& ops_;
  bool ops_path_;
  TokenGroup& group_;
  int64_t rows_ = 0, total_rows_ = 0;  // this block's rows, the batch's
  // Split batches: per (choice, expert) counts of this block and of every block, per-expert
  // totals, and the batch's assignments before this block's (moe_plan's `before`).
  std::vector<int64_t> choice_counts_, group_counts_, expert_totals_, before_;
  std::vector<int64_t> load_counts_;  // rows per local expert, then dropped (summed over the group)
  bool swiglu_;
  int64_t C_, F_, E_, k_;
  double capacity_factor_;
  Param* router_ = nullptr;
  std::vector<Param*> up_w_, up_b_, down_w_, down_b_;  // per expert; biases for gpt2 only
  std::unique_ptr<Mlp> shared_;
  std::unique_ptr<TokenDispatcher> dispatcher_;
  // Per token: router logits and probabilities (N, E), choices and gates (N, k).
  Buffer logits_, probs_, gate_, dgate_, dlogits_, dprobs_;
  std::vector<int32_t> expert_;
  // Per kept assignment (at most N * k rows): expert input, up output, activation, output.
  Buffer xin_, hup_, act_, out_, dout_, dact_, dhup_, dxin_, y_, dx_;
  int64_t reserved_rows_ = 0;  // rows the per-assignment buffers hold
  const float* x_ = nullptr;
  Ref x_ref_;  // ops path: the input (owned by the previous layer)
  // Ops path: router choices and the plan in backend memory, the expert offsets on the host.
  Buffer expert_dev_, slot_, token_of_slot_, dlogits_act_;
  std::vector<int64_t> offsets_;
  std::vector<Task> tasks_[2];
  MoeStats stats_;
};

}  // namespace castor::nn
