// Feed-forward block: GPT-2's fc -> GELU(tanh) -> proj, or Llama's fused
// [gate | up] -> SwiGLU -> down. The caller supplies the named pieces; the hidden size
// follows from them (the dense d_ff, or an MoE shared expert's). The builder makes the up
// projection column-parallel and the down projection row-parallel (tp splits d_ff).
#pragma once
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/nn/layer_builder.h"

namespace castor::nn {

class Mlp final : public Module {
 public:
  Mlp(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t max_rows,
      const std::vector<Linear::Piece>& up, const Linear::Piece& down, float down_init_std);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;

 private:
  Ops& ops_;
  bool swiglu_;
  int64_t F_;  // hidden features on this rank
  std::unique_ptr<LinearLayer> up_, down_;
  Buffer act_, dact_;
  Ref pre_;  // pre-activation (owned by up_)
};

}  // namespace castor::nn
