// Norm forward/backward over the LayerNorm / RMSNorm kernels.
#include "core/nn/norm.h"

#include "kernels/cpu/norm.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Norm::Norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C, Family family,
           const std::string& prefix, float eps)
    : layer_norm_(family == Family::kGpt2), C_(C), eps_(eps) {
  weight_ = store.add(prefix + ".weight", {C}, Init::ones(), false);
  if (layer_norm_) bias_ = store.add(prefix + ".bias", {C}, Init::zeros(), false);
  y_ = Buffer(backend, size_t(max_rows * C) * sizeof(float));
  dx_ = Buffer(backend, size_t(max_rows * C) * sizeof(float));
  mean_ = Buffer(backend, size_t(max_rows) * sizeof(float));
  rstd_ = Buffer(backend, size_t(max_rows) * sizeof(float));
}

Tensor Norm::forward(const Pass&, Tensor x) {
  const int64_t N = x.shape[0];  // this rank's rows under sequence parallelism
  x_ = x.f32();
  if (layer_norm_) {
    CASTOR_KERNEL_CHECK(kc::layernorm_forward(y_.f32(), mean_.f32(), rstd_.f32(), x_, weight_->w,
                                              bias_->w, N, C_, eps_));
  } else {
    CASTOR_KERNEL_CHECK(kc::rmsnorm_forward(y_.f32(), rstd_.f32(), x_, weight_->w, N, C_, eps_));
  }
  return rows_view(y_.f32(), N, C_);
}

Tensor Norm::backward(const Pass&, Tensor dy) {
  const int64_t N = dy.shape[0];
  if (layer_norm_) {
    CASTOR_KERNEL_CHECK(kc::layernorm_backward(dx_.f32(), weight_->g, bias_->g, dy.f32(), x_,
                                               weight_->w, mean_.f32(), rstd_.f32(), N, C_));
  } else {
    CASTOR_KERNEL_CHECK(kc::rmsnorm_backward(dx_.f32(), weight_->g, dy.f32(), x_, weight_->w,
                                             rstd_.f32(), N, C_));
  }
  return rows_view(dx_.f32(), N, C_);
}

}  // namespace castor::nn
