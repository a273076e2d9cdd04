// Norm forward/backward over the LayerNorm / RMSNorm kernels.
#include "core/nn/norm.h"

namespace castor::nn {

Norm::Norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C, Family family,
           const std::string& prefix, float eps)
    : ops_(backend.ops()), layer_norm_(family == Family::kGpt2), C_(C), eps_(eps) {
  weight_ = store.add(prefix + ".weight", {C}, Init::ones(), false);
  if (layer_norm_) bias_ = store.add(prefix + ".bias", {C}, Init::zeros(), false);
  y_ = act_buffer(backend, max_rows * C);
  dx_ = act_buffer(backend, max_rows * C);
  mean_ = Buffer(backend, size_t(max_rows) * sizeof(float));
  rstd_ = Buffer(backend, size_t(max_rows) * sizeof(float));
}

Tensor Norm::forward(const Pass&, Tensor x) {
  const int64_t N = x.shape[0];  // this rank's rows under sequence parallelism
  x_ = ref(x);
  if (layer_norm_) {
    ops_.layernorm_forward(y_.ref(), mean_.f32(), rstd_.f32(), x_, weight_->cw(), bias_->cw(), N, C_, eps_);
  } else {
    ops_.rmsnorm_forward(y_.ref(), rstd_.f32(), x_, weight_->cw(), N, C_, eps_);
  }
  return y_.rows(N, C_);
}

Tensor Norm::backward(const Pass&, Tensor dy) {
  const int64_t N = dy.shape[0];
  if (layer_norm_) {
    ops_.layernorm_backward(dx_.ref(), weight_->g, bias_->g, ref(dy), x_, weight_->cw(), mean_.f32(), rstd_.f32(), N,
                            C_);
  } else {
    ops_.rmsnorm_backward(dx_.ref(), weight_->g, ref(dy), x_, weight_->cw(), rstd_.f32(), N, C_);
  }
  return dx_.rows(N, C_);
}

}  // namespace castor::nn
