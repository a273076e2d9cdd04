// Causal self-attention: fused qkv projection -> (RoPE on q, k for Llama) -> scaled
// dot-product attention with grouped-query heads -> output projection. The qkv layer's
// pieces and the output layer come from the caller (who owns the naming).
// With pass.cache set (generation, B = 1) forward runs the pass's rows at positions
// pass.past + t: RoPE at those positions, keys and values appended to the cache's layer
// `layer`, queries attending over the cache (kernels/cpu/kv_attention.h). Backward is
// training-only and refuses a cached pass.
// Under tensor parallelism the builder splits the qkv projection by heads (query and
// key/value heads alike, so grouped-query heads stay with their queries) and the output
// projection by its input; this rank then runs attention over its own heads.
#pragma once
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/nn/layer_builder.h"
#include "kernels/cpu/attention.h"

namespace castor::nn {

class Attention final : public Module {
 public:
  Attention(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t max_B,
            int64_t max_T, const std::vector<Linear::Piece>& qkv, const Linear::Piece& out, float out_init_std,
            int64_t layer = 0);
  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;

 private:
  kernels::cpu::AttentionShape shape(const Pass& pass) const;
  Tensor forward_cached(const Pass& pass, float* qkv);
  Ops& ops_;
  int64_t H_, KVH_, D_, layer_;  // heads on this rank
  bool rope_;
  std::unique_ptr<LinearLayer> qkv_, proj_;
  Buffer out_, lse_, dout_, rope_table_;
  std::vector<float> decode_scratch_;  // generation (cpu backend)
  Ref qkv_act_;  // post-RoPE q, k and v (owned by qkv_)
};

}  // namespace castor::nn
