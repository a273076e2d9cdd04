// Mlp forward/backward over the GELU and SwiGLU kernels.
#include "core/nn/mlp.h"

#include "kernels/cpu/activation.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Mlp::Mlp(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t max_rows,
         const std::vector<Linear::Piece>& up, const Linear::Piece& down, float down_init_std)
    : swiglu_(cfg.family == Family::kLlama) {
  int64_t up_out = 0;
  for (const Linear::Piece& p : up) up_out += p.out;
  up_ = layers.column(store, backend, max_rows, cfg.d_model, up, cfg.init_std);
  F_ = swiglu_ ? up_->out_features() / 2 : up_->out_features();
  down_ = layers.row(store, backend, max_rows, swiglu_ ? up_out / 2 : up_out, down, down_init_std);
  CASTOR_CHECK(down_->in_features() == F_, "mlp: up and down projections do not match");
  act_ = Buffer(backend, size_t(max_rows * F_) * sizeof(float));
  dact_ = Buffer(backend, size_t(max_rows * up_->out_features()) * sizeof(float));
}

Tensor Mlp::forward(const Pass& pass, Tensor x) {
  Tensor h = up_->forward(pass, x);
  const int64_t N = h.shape[0];  // every row under sequence parallelism
  pre_ = h.f32();
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_forward(act_.f32(), pre_, N, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::gelu_forward(act_.f32(), pre_, N * F_));
  }
  return down_->forward(pass, rows_view(act_.f32(), N, F_));
}

Tensor Mlp::backward(const Pass& pass, Tensor dy) {
  Tensor da = down_->backward(pass, dy);
  const int64_t N = da.shape[0];
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_backward(dact_.f32(), da.f32(), pre_, N, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::gelu_backward(dact_.f32(), da.f32(), pre_, N * F_));
  }
  return up_->backward(pass, rows_view(dact_.f32(), N, up_->out_features()));
}

}  // namespace castor::nn
