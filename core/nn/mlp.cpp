// Mlp forward/backward over the GELU and SwiGLU kernels.
#include "core/nn/mlp.h"

#include "kernels/cpu/activation.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Mlp::Mlp(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows,
         const std::vector<Linear::Piece>& up, const Linear::Piece& down, float down_init_std)
    : swiglu_(cfg.family == Family::kLlama) {
  int64_t up_out = 0;
  for (const Linear::Piece& p : up) up_out += p.out;
  F_ = swiglu_ ? up_out / 2 : up_out;
  up_ = std::make_unique<Linear>(store, backend, max_rows, cfg.d_model, up, cfg.init_std);
  down_ = std::make_unique<Linear>(store, backend, max_rows, F_, std::vector<Linear::Piece>{down}, down_init_std);
  CASTOR_CHECK(up_->out_features() == (swiglu_ ? 2 * F_ : F_), "mlp: up pieces do not add up");
  act_ = Buffer(backend, size_t(max_rows * F_) * sizeof(float));
  dact_ = Buffer(backend, size_t(max_rows * up_->out_features()) * sizeof(float));
}

Tensor Mlp::forward(const Pass& pass, Tensor x) {
  const int64_t N = pass.rows();
  Tensor h = up_->forward(pass, x);
  pre_ = h.f32();
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_forward(act_.f32(), pre_, N, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::gelu_forward(act_.f32(), pre_, N * F_));
  }
  return down_->forward(pass, rows_view(act_.f32(), N, F_));
}

Tensor Mlp::backward(const Pass& pass, Tensor dy) {
  const int64_t N = pass.rows();
  Tensor da = down_->backward(pass, dy);
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_backward(dact_.f32(), da.f32(), pre_, N, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::gelu_backward(dact_.f32(), da.f32(), pre_, N * F_));
  }
  return up_->backward(pass, rows_view(dact_.f32(), N, up_->out_features()));
}

}  // namespace castor::nn
