// Feed-forward block: GPT-2's fc -> GELU(tanh) -> proj, or Llama's fused
// [gate | up] -> SwiGLU -> down. The caller supplies the named pieces; the hidden size
// follows from them (the dense d_ff, or an MoE shared expert's).
#pragma once
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/nn/linear.h"

namespace castor::nn {

class Mlp final : public Module {
 public:
  Mlp(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows,
      const std::vector<Linear::Piece>& up, const Linear::Piece& down, float down_init_std);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;

 private:
  bool swiglu_;
  int64_t F_;
  std::unique_ptr<Linear> up_, down_;
  Buffer act_, dact_;
  const float* pre_ = nullptr;  // pre-activation (owned by up_)
};

}  // namespace castor::nn
