// Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(.)).
// Parameter names follow Hugging Face: transformer.h.{i}.* (gpt2) or model.layers.{i}.*
// (llama), so export is a renaming only (our Linear weights are stored (out, in)).
#pragma once
#include <memory>

#include "core/nn/attention.h"
#include "core/nn/mlp.h"
#include "core/nn/norm.h"

namespace castor::nn {

class Block final : public Module {
 public:
  Block(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t layer, int64_t max_B,
        int64_t max_T);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;

 private:
  int64_t C_;
  std::unique_ptr<Norm> norm1_, norm2_;
  std::unique_ptr<Attention> attn_;
  std::unique_ptr<Mlp> mlp_;
  Buffer res1_, res2_, dres1_, dx_;
};

}  // namespace castor::nn
