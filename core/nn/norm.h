// Norm: LayerNorm (weight, bias) for the GPT-2 family or RMSNorm (weight) for Llama,
// over the model dimension of (rows, C) activations.
#pragma once
#include <string>

#include "core/config.h"
#include "core/nn/module.h"
#include "core/param.h"

namespace castor::nn {

class Norm final : public Module {
 public:
  // prefix: e.g. "transformer.h.0.ln_1" -> params prefix.weight (+ prefix.bias).
  Norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C, Family family,
       const std::string& prefix, float eps);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;

 private:
  Ops& ops_;
  bool layer_norm_;
  int64_t C_;
  float eps_;
  Param* weight_ = nullptr;
  Param* bias_ = nullptr;
  Buffer y_, dx_, mean_, rstd_;
  Ref x_;
};

}  // namespace castor::nn
