// Pre-norm transformer block: x + attn(norm1(x)), then + ffn(norm2(.)), where the
// feed-forward is a dense Mlp or, in MoE layers (ModelConfig::is_moe_layer), a Moe.
// Parameter names follow Hugging Face: transformer.h.{i}.* (gpt2) or model.layers.{i}.*
// (llama), so export is a renaming only (our Linear weights are stored (out, in)).
// The builder decides the split over tensor-parallel ranks. An MoE layer's experts are not
// split by tp: each tp rank routes a block of the pass's rows instead, with the router's
// statistics summed over tp (LayerBuilder::split_tokens, core/nn/token_group.h).
#pragma once
#include <memory>

#include "core/nn/attention.h"
#include "core/nn/mlp.h"
#include "core/nn/moe.h"
#include "core/nn/norm.h"

namespace castor::nn {

class Block final : public Module {
 public:
  Block(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t layer,
        int64_t max_B, int64_t max_T);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;
  const Moe* moe() const { return moe_; }  // nullptr in dense layers

 private:
  Ops& ops_;
  int64_t C_;
  std::unique_ptr<Module> norm1_, norm2_;
  std::unique_ptr<Attention> attn_;
  std::unique_ptr<Module> ffn_;
  Moe* moe_ = nullptr;
  Buffer res1_, res2_, dres1_, dx_;
};

}  // namespace castor::nn
