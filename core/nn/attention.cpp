// Attention forward/backward. The gradient w.r.t. the rotated q, k is rotated back
// (RoPE is orthogonal) before it flows into the qkv projection.
#include "core/nn/attention.h"

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/rope.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Attention::Attention(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_B,
                     int64_t max_T, const std::vector<Linear::Piece>& qkv, const Linear::Piece& out,
                     float out_init_std)
    : H_(cfg.n_heads), KVH_(cfg.kv_heads()), D_(cfg.head_dim()), rope_(cfg.family == Family::kLlama) {
  const int64_t rows = max_B * max_T, C = cfg.d_model;
  qkv_ = std::make_unique<Linear>(store, backend, rows, C, qkv, cfg.init_std);
  proj_ = std::make_unique<Linear>(store, backend, rows, H_ * D_, std::vector<Linear::Piece>{out}, out_init_std);
  CASTOR_CHECK(qkv_->out_features() == (H_ + 2 * KVH_) * D_, "attention: qkv pieces do not add up");
  out_ = Buffer(backend, size_t(rows * H_ * D_) * sizeof(float));
  dout_ = Buffer(backend, size_t(rows * (H_ + 2 * KVH_) * D_) * sizeof(float));
  lse_ = Buffer(backend, size_t(max_B * H_ * max_T) * sizeof(float));
  scratch_floats_ = kc::attention_scratch_floats({max_B, max_T, H_, KVH_, D_}, kc::num_threads());
  scratch_ = Buffer(backend, scratch_floats_ * sizeof(float));
  if (rope_) {
    rope_table_ = Buffer(backend, size_t(max_T * D_) * sizeof(float));
    CASTOR_KERNEL_CHECK(kc::rope_table(rope_table_.f32(), max_T, D_, cfg.rope_theta));
  }
}

kc::AttentionShape Attention::shape(const Pass& pass) const { return {pass.B, pass.T, H_, KVH_, D_}; }

Tensor Attention::forward(const Pass& pass, Tensor x) {
  Tensor qkv = qkv_->forward(pass, x);
  qkv_act_ = qkv.f32();
  const int64_t stride = (H_ + 2 * KVH_) * D_;
  if (rope_) {
    CASTOR_KERNEL_CHECK(kc::rope_apply(qkv_act_, rope_table_.f32(), pass.B, pass.T, H_, D_, stride, false));
    CASTOR_KERNEL_CHECK(kc::rope_apply(qkv_act_ + H_ * D_, rope_table_.f32(), pass.B, pass.T, KVH_, D_,
                                       stride, false));
  }
  CASTOR_KERNEL_CHECK(kc::attention_forward(out_.f32(), lse_.f32(), qkv_act_, shape(pass),
                                            scratch_.f32(), scratch_floats_, pass.key_begin));
  return proj_->forward(pass, rows_view(out_.f32(), pass.rows(), H_ * D_));
}

Tensor Attention::backward(const Pass& pass, Tensor dy) {
  Tensor d_att = proj_->backward(pass, dy);
  float* dqkv = dout_.f32();
  CASTOR_KERNEL_CHECK(kc::attention_backward(dqkv, d_att.f32(), qkv_act_, out_.f32(), lse_.f32(),
                                             shape(pass), scratch_.f32(), scratch_floats_, pass.key_begin));
  const int64_t stride = (H_ + 2 * KVH_) * D_;
  if (rope_) {
    CASTOR_KERNEL_CHECK(kc::rope_apply(dqkv, rope_table_.f32(), pass.B, pass.T, H_, D_, stride, true));
    CASTOR_KERNEL_CHECK(kc::rope_apply(dqkv + H_ * D_, rope_table_.f32(), pass.B, pass.T, KVH_, D_, stride, true));
  }
  return qkv_->backward(pass, rows_view(dqkv, pass.rows(), stride));
}

}  // namespace castor::nn
