// Block: Hugging Face naming per family, residual adds in forward and backward.
#include "core/nn/block.h"

#include <cmath>
#include <string>

namespace castor::nn {

Block::Block(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t layer,
             int64_t max_B, int64_t max_T)
    : ops_(backend.ops()), C_(cfg.d_model) {
  const int64_t rows = max_B * max_T, hd = cfg.head_dim(), H = cfg.n_heads, KVH = cfg.kv_heads();
  // GPT-2 scheme: residual-stream projections get std / sqrt(2 * n_layers).
  const float proj_std = cfg.init_std / std::sqrt(2.0f * float(cfg.n_layers));
  const std::string L = std::to_string(layer);
  if (cfg.family == Family::kGpt2) {
    const std::string p = "transformer.h." + L;
    norm1_ = layers.norm(store, backend, rows, C_, cfg.family, p + ".ln_1", cfg.norm_eps);
    attn_ = std::make_unique<Attention>(
        store, backend, layers, cfg, max_B, max_T,
        std::vector<Linear::Piece>{
            {p + ".attn.c_attn.weight", p + ".attn.c_attn.bias", (H + 2 * KVH) * hd, {H * hd, KVH * hd, KVH * hd}}},
        Linear::Piece{p + ".attn.c_proj.weight", p + ".attn.c_proj.bias", C_}, proj_std, layer);
    norm2_ = layers.norm(store, backend, rows, C_, cfg.family, p + ".ln_2", cfg.norm_eps);
    if (!cfg.is_moe_layer(layer))
      ffn_ = std::make_unique<Mlp>(store, backend, layers, cfg, rows,
                                   std::vector<Linear::Piece>{{p + ".mlp.c_fc.weight", p + ".mlp.c_fc.bias", cfg.ffn_dim()}},
                                   Linear::Piece{p + ".mlp.c_proj.weight", p + ".mlp.c_proj.bias", C_}, proj_std);
  } else {
    const std::string p = "model.layers." + L;
    norm1_ = layers.norm(store, backend, rows, C_, cfg.family, p + ".input_layernorm", cfg.norm_eps);
    attn_ = std::make_unique<Attention>(store, backend, layers, cfg, max_B, max_T,
                                        std::vector<Linear::Piece>{{p + ".self_attn.q_proj.weight", "", H * hd},
                                                                   {p + ".self_attn.k_proj.weight", "", KVH * hd},
                                                                   {p + ".self_attn.v_proj.weight", "", KVH * hd}},
                                        Linear::Piece{p + ".self_attn.o_proj.weight", "", C_}, proj_std, layer);
    norm2_ = layers.norm(store, backend, rows, C_, cfg.family, p + ".post_attention_layernorm",
                                    cfg.norm_eps);
    if (!cfg.is_moe_layer(layer))
      ffn_ = std::make_unique<Mlp>(store, backend, layers, cfg, rows,
                                   std::vector<Linear::Piece>{{p + ".mlp.gate_proj.weight", "", cfg.ffn_dim()},
                                                              {p + ".mlp.up_proj.weight", "", cfg.ffn_dim()}},
                                   Linear::Piece{p + ".mlp.down_proj.weight", "", C_}, proj_std);
  }
  if (cfg.is_moe_layer(layer)) {
    const size_t first = store.params().size();
    auto moe = std::make_unique<Moe>(
        store, backend, cfg, rows,
        cfg.family == Family::kGpt2 ? "transformer.h." + L + ".mlp" : "model.layers." + L + ".block_sparse_moe",
        proj_std, layers.dispatcher(cfg.moe_experts), layers.token_group());
    moe_ = moe.get();
    ffn_ = layers.split_tokens(std::move(moe), store.added_since(first), backend, rows, C_);
  }
  res1_ = act_buffer(backend, rows * C_);
  res2_ = act_buffer(backend, rows * C_);
  dres1_ = act_buffer(backend, rows * C_);
  dx_ = act_buffer(backend, rows * C_);
}

// x holds this rank's rows of the residual stream (all rows without sequence parallelism).
Tensor Block::forward(const Pass& pass, Tensor x) {
  const int64_t rows = x.shape[0], n = rows * C_;
  Tensor a = attn_->forward(pass, norm1_->forward(pass, x));
  ops_.add(res1_.ref(), ref(x), ref(a), n);
  Tensor m = ffn_->forward(pass, norm2_->forward(pass, res1_.rows(rows, C_)));
  ops_.add(res2_.ref(), res1_.ref(), ref(m), n);
  return res2_.rows(rows, C_);
}

Tensor Block::backward(const Pass& pass, Tensor dy) {
  const int64_t rows = dy.shape[0], n = rows * C_;
  Tensor dn2 = norm2_->backward(pass, ffn_->backward(pass, dy));
  ops_.add(dres1_.ref(), ref(dy), ref(dn2), n);
  Tensor dn1 = norm1_->backward(pass, attn_->backward(pass, dres1_.rows(rows, C_)));
  ops_.add(dx_.ref(), dres1_.ref(), ref(dn1), n);
  return dx_.rows(rows, C_);
}

}  // namespace castor::nn
