// Mlp forward/backward over the GELU and SwiGLU kernels.
#include "core/nn/mlp.h"

namespace castor::nn {

Mlp::Mlp(ParamStore& store, Backend& backend, LayerBuilder& layers, const ModelConfig& cfg, int64_t max_rows,
         const std::vector<Linear::Piece>& up, const Linear::Piece& down, float down_init_std)
    : ops_(backend.ops()), swiglu_(cfg.family == Family::kLlama) {
  int64_t up_out = 0;
  for (const Linear::Piece& p : up) up_out += p.out;
  up_ = layers.column(store, backend, max_rows, cfg.d_model, up, cfg.init_std);
  F_ = swiglu_ ? up_->out_features() / 2 : up_->out_features();
  down_ = layers.row(store, backend, max_rows, swiglu_ ? up_out / 2 : up_out, down, down_init_std);
  CASTOR_CHECK(down_->in_features() == F_, "mlp: up and down projections do not match");
  act_ = act_buffer(backend, max_rows * F_);
  dact_ = act_buffer(backend, max_rows * up_->out_features());
}

Tensor Mlp::forward(const Pass& pass, Tensor x) {
  Tensor h = up_->forward(pass, x);
  const int64_t N = h.shape[0];  // every row under sequence parallelism
  pre_ = ref(h);
  if (swiglu_) {
    ops_.swiglu_forward(act_.ref(), pre_, N, F_);
  } else {
    ops_.gelu_forward(act_.ref(), pre_, N * F_);
  }
  return down_->forward(pass, act_.rows(N, F_));
}

Tensor Mlp::backward(const Pass& pass, Tensor dy) {
  Tensor da = down_->backward(pass, dy);
  const int64_t N = da.shape[0];
  if (swiglu_) {
    ops_.swiglu_backward(dact_.ref(), ref(da), pre_, N, F_);
  } else {
    ops_.gelu_backward(dact_.ref(), ref(da), pre_, N * F_);
  }
  return up_->backward(pass, dact_.rows(N, up_->out_features()));
}

}  // namespace castor::nn
