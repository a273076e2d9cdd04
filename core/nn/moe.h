// Mixture-of-experts feed-forward (docs/model.md): router -> top-k gates -> dispatch ->
// one GEMM per expert over its rows -> combine, plus an optional shared expert. The
// router's balance and z losses are computed in forward (values in stats()) and their
// gradients, weighted by pass.balance_scale / pass.z_scale, join the gate gradients in
// backward. Token movement goes through a TokenDispatcher (local here; all-to-all under
// expert parallelism), so the module reads the same in either case.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/nn/mlp.h"
#include "core/nn/token_dispatcher.h"

namespace castor::nn {

// What one MoE forward measured (for the log and the loss terms).
struct MoeStats {
  double balance = 0.0;   // E * sum_e f_e P_e
  double router_z = 0.0;  // mean logsumexp^2
  int64_t assignments = 0, dropped = 0;
  int64_t min_load = 0, max_load = 0;  // kept assignments of the least / most loaded expert
};

class Moe final : public Module {
 public:
  // prefix: "model.layers.3.block_sparse_moe" (llama) or "transformer.h.3.mlp" (gpt2).
  Moe(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows, const std::string& prefix,
      float down_init_std, std::unique_ptr<TokenDispatcher> dispatcher = nullptr);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;
  const MoeStats& stats() const { return stats_; }

 private:
  void expert_forward(int64_t e, int64_t r0, int64_t rows);
  void expert_backward(int64_t e, int64_t r0, int64_t rows);

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
  const float* x_ = nullptr;
  MoeStats stats_;
};

}  // namespace castor::nn
