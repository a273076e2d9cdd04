// Attention forward/backward. The gradient w.r.t. the rotated q, k is rotated back
// (RoPE is orthogonal) before it flows into the qkv projection.
#include "core/nn/attention.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kv_attention.h"
#include "kernels/cpu/rope.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Attention::Attention(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t max_B,
                     int64_t max_T, const std::vector<Linear::Piece>& qkv, const Linear::Piece& out,
                     float out_init_std, int64_t layer)
    : ops_(backend.ops()),
      H_(cfg.n_heads / layers.tp_size()),
      KVH_(cfg.kv_heads() / layers.tp_size()),
      D_(cfg.head_dim()),
      layer_(layer),
      rope_(cfg.family == Family::kLlama) {
  const int64_t rows = max_B * max_T, C = cfg.d_model;
  qkv_ = layers.column(store, backend, rows, C, qkv, cfg.init_std);
  proj_ = layers.row(store, backend, rows, cfg.n_heads * D_, out, out_init_std);
  CASTOR_CHECK(qkv_->out_features() == (H_ + 2 * KVH_) * D_ && proj_->in_features() == H_ * D_,
               "attention: qkv pieces do not add up");
  out_ = act_buffer(backend, rows * H_ * D_);
  dout_ = act_buffer(backend, rows * (H_ + 2 * KVH_) * D_);
  lse_ = Buffer(backend, size_t(max_B * H_ * max_T) * sizeof(float));
  if (rope_) {  // computed on the host in double, copied to the backend
    std::vector<float> table(size_t(max_T * D_));
    CASTOR_KERNEL_CHECK(kc::rope_table(table.data(), max_T, D_, cfg.rope_theta));
    rope_table_ = Buffer(backend, table.size() * sizeof(float));
    backend.copy(rope_table_.data(), table.data(), rope_table_.bytes());
  }
}

kc::AttentionShape Attention::shape(const Pass& pass) const { return {pass.B, pass.T, H_, KVH_, D_}; }

Tensor Attention::forward(const Pass& pass, Tensor x) {
  Tensor qkv = qkv_->forward(pass, x);
  if (pass.cache) return forward_cached(pass, qkv.f32());
  qkv_act_ = ref(qkv);
  const int64_t stride = (H_ + 2 * KVH_) * D_;
  if (rope_) {
    ops_.rope_apply(qkv_act_, rope_table_.f32(), pass.B, pass.T, H_, D_, stride, false);
    ops_.rope_apply(qkv_act_.at(H_ * D_), rope_table_.f32(), pass.B, pass.T, KVH_, D_, stride, false);
  }
  ops_.attention_forward(out_.ref(), lse_.f32(), qkv_act_, shape(pass), pass.key_begin);
  return proj_->forward(pass, out_.rows(pass.rows(), H_ * D_));
}

Tensor Attention::forward_cached(const Pass& pass, float* qkv) {
  KvCache& cache = *pass.cache;
  const int64_t n = pass.T, past = pass.past, kvd = KVH_ * D_, stride = (H_ + 2 * KVH_) * D_;
  CASTOR_CHECK(pass.B == 1, "attention with a KV cache takes one sequence (got a batch of ", pass.B, ")");
  CASTOR_CHECK(layer_ < int64_t(cache.k.size()) && cache.kv_dim == kvd, "KV cache not sized for this model");
  CASTOR_CHECK(past >= 0 && past + n <= cache.capacity, "KV cache holds ", cache.capacity, " positions; ", past, " + ",
               n, " do not fit");
  if (rope_) {  // rows are positions past .. past + n - 1: the table from row `past` on
    const float* table = rope_table_.f32() + past * D_;
    CASTOR_KERNEL_CHECK(kc::rope_apply(qkv, table, 1, n, H_, D_, stride, false));
    CASTOR_KERNEL_CHECK(kc::rope_apply(qkv + H_ * D_, table, 1, n, KVH_, D_, stride, false));
  }
  float* kbuf = cache.k[size_t(layer_)].data();
  float* vbuf = cache.v[size_t(layer_)].data();
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(kbuf + (past + t) * kvd, qkv + t * stride + H_ * D_, size_t(kvd) * sizeof(float));
    std::memcpy(vbuf + (past + t) * kvd, qkv + t * stride + (H_ + KVH_) * D_, size_t(kvd) * sizeof(float));
  }
  const kc::KvAttentionShape s{past, n, H_, KVH_, D_};
  decode_scratch_.resize(kc::attention_decode_scratch_floats(s, kc::num_threads()));
  CASTOR_KERNEL_CHECK(kc::attention_decode(out_.f32(), H_ * D_, qkv, stride, kbuf, vbuf, kvd, s,
                                           decode_scratch_.data(), decode_scratch_.size(), pass.key_begin));
  qkv_act_ = {};
  return proj_->forward(pass, rows_view(out_.f32(), n, H_ * D_));
}

Tensor Attention::backward(const Pass& pass, Tensor dy) {
  CASTOR_CHECK(pass.cache == nullptr && qkv_act_.p != nullptr, "attention backward after a cached (generation) pass");
  Tensor d_att = proj_->backward(pass, dy);
  const Ref dqkv = dout_.ref();
  ops_.attention_backward(dqkv, ref(d_att), qkv_act_, out_.ref(), lse_.f32(), shape(pass), pass.key_begin);
  const int64_t stride = (H_ + 2 * KVH_) * D_;
  if (rope_) {
    ops_.rope_apply(dqkv, rope_table_.f32(), pass.B, pass.T, H_, D_, stride, true);
    ops_.rope_apply(dqkv.at(H_ * D_), rope_table_.f32(), pass.B, pass.T, KVH_, D_, stride, true);
  }
  return qkv_->backward(pass, dout_.rows(pass.rows(), stride));
}

}  // namespace castor::nn
