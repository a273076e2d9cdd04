// Transformer assembly (Hugging Face names), forward with the fused LM-head loss,
// backward through blocks in reverse, and last-position logits for generation.
#include "core/model.h"

#include <algorithm>

#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"

namespace castor {

namespace kc = kernels::cpu;

Transformer::Transformer(const ModelConfig& cfg, ParamStore& store, Backend& backend, int64_t max_B,
                         int64_t max_T)
    : cfg_(cfg), max_B_(max_B), max_T_(max_T) {
  cfg_.validate();
  CASTOR_CHECK(max_T <= cfg.max_seq_len, "sequence length ", max_T, " exceeds --model.max_seq_len (",
               cfg.max_seq_len, ")");
  const int64_t rows = max_B * max_T, C = cfg.d_model, V = cfg.vocab_size;
  const bool gpt2 = cfg.family == Family::kGpt2;
  wte_ = store.add(gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight", {V, C},
                   Init::normal(cfg.init_std), true);
  if (gpt2) wpe_ = store.add("transformer.wpe.weight", {cfg.max_seq_len, C}, Init::normal(cfg.init_std), true);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    block_offset_.push_back(store.numel());
    blocks_.push_back(std::make_unique<nn::Block>(store, backend, cfg, l, max_B, max_T));
  }
  norm_offset_ = store.numel();
  norm_f_ = std::make_unique<nn::Norm>(store, backend, rows, C, cfg.family,
                                       gpt2 ? "transformer.ln_f" : "model.norm", cfg.norm_eps);
  head_ = cfg.tied_embeddings() ? wte_ : store.add("lm_head.weight", {V, C}, Init::normal(cfg.init_std), true);
  emb_ = Buffer(backend, size_t(rows * C) * sizeof(float));
  dhidden_ = Buffer(backend, size_t(rows * C) * sizeof(float));
  head_chunk_ = head_chunk_rows(rows, V);
  head_scratch_ = Buffer(backend, kc::lm_head_xent_scratch_floats(head_chunk_, V) * sizeof(float));
}

int64_t Transformer::head_chunk_rows(int64_t rows, int64_t vocab_size) {
  // 512 rows measured best (bench/NOTES.md); scratch capped at 32M floats (128 MB).
  return std::clamp<int64_t>((int64_t(32) << 20) / std::max<int64_t>(vocab_size, 1), 1, std::min<int64_t>(rows, 512));
}

Tensor Transformer::trunk_forward(const nn::Pass& pass, const int32_t* ids) {
  CASTOR_CHECK(pass.B <= max_B_ && pass.T <= max_T_, "batch (", pass.B, ", ", pass.T,
               ") exceeds the model's buffers (", max_B_, ", ", max_T_, ")");
  const int64_t C = cfg_.d_model;
  kernels::Status st = kc::embedding_forward(emb_.f32(), ids, wte_->w, wpe_ ? wpe_->w : nullptr, pass.rows(),
                                             pass.T, C, cfg_.vocab_size);
  CASTOR_CHECK(st == kernels::Status::kOk, "token id outside the model vocabulary (", cfg_.vocab_size, ")");
  Tensor x = nn::rows_view(emb_.f32(), pass.rows(), C);
  for (auto& b : blocks_) x = b->forward(pass, x);
  return norm_f_->forward(pass, x);
}

kc::XentResult Transformer::forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T,
                                    const float* grad_scale) {
  pass_ = {B, T};
  ids_ = ids;
  Tensor h = trunk_forward(pass_, ids);
  kc::XentResult r;
  const bool train = grad_scale != nullptr;
  CASTOR_KERNEL_CHECK(kc::lm_head_xent(&r, h.f32(), head_->w, targets, pass_.rows(), cfg_.d_model,
                                       cfg_.vocab_size, train ? *grad_scale : 0.0f,
                                       train ? dhidden_.f32() : nullptr, train ? head_->g : nullptr,
                                       head_scratch_.f32(), head_chunk_));
  pending_backward_ = train;
  return r;
}

void Transformer::backward(const std::function<void(size_t)>& grads_ready) {
  CASTOR_CHECK(pending_backward_, "Transformer::backward without a training forward");
  pending_backward_ = false;
  auto ready = [&](size_t offset) {
    if (grads_ready) grads_ready(offset);
  };
  Tensor d = norm_f_->backward(pass_, nn::rows_view(dhidden_.f32(), pass_.rows(), cfg_.d_model));
  ready(norm_offset_);  // final norm and an untied head (its gradient came with forward)
  for (size_t l = blocks_.size(); l-- > 0;) {
    d = blocks_[l]->backward(pass_, d);
    ready(block_offset_[l]);
  }
  CASTOR_KERNEL_CHECK(kc::embedding_backward(wte_->g, wpe_ ? wpe_->g : nullptr, d.f32(), ids_, pass_.rows(),
                                             pass_.T, cfg_.d_model, cfg_.vocab_size));
  ready(0);
}

void Transformer::last_logits(const int32_t* ids, int64_t B, int64_t T, float* logits) {
  nn::Pass pass{B, T};
  Tensor h = trunk_forward(pass, ids);
  const int64_t C = cfg_.d_model, V = cfg_.vocab_size;
  // Row (b, T-1) of each sequence: a strided view (lda = T*C) into the hidden states.
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, B, V, C, 1.0f, h.f32() + (T - 1) * C, T * C, head_->w, C, 0.0f,
                               logits, V));
  pending_backward_ = false;
}

}  // namespace castor
