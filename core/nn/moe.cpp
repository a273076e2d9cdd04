// Moe: expert parameters are registered expert by expert (Mixtral / GPT-2 style names,
// docs/model.md), so each expert's [gate | up] matrix is contiguous and runs as one GEMM.
#include "core/nn/moe.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Moe::Moe(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows, const std::string& prefix,
         float down_init_std, std::unique_ptr<TokenDispatcher> dispatcher)
    : swiglu_(cfg.family == Family::kLlama),
      C_(cfg.d_model),
      F_(cfg.expert_ffn_dim()),
      E_(cfg.moe_experts),
      k_(cfg.moe_top_k),
      capacity_factor_(cfg.moe_capacity),
      dispatcher_(dispatcher ? std::move(dispatcher) : std::make_unique<LocalDispatcher>(cfg.moe_experts)) {
  const float std = cfg.init_std;
  router_ = store.add(prefix + (swiglu_ ? ".gate.weight" : ".router.weight"), {E_, C_}, Init::normal(std), true);
  for (int64_t e = 0; e < E_; ++e) {
    const std::string p = prefix + ".experts." + std::to_string(e);
    if (swiglu_) {  // w1 (gate) and w3 (up) back to back: one (2F, C) matrix
      up_w_.push_back(store.add(p + ".w1.weight", {F_, C_}, Init::normal(std), true));
      store.add(p + ".w3.weight", {F_, C_}, Init::normal(std), true);
      down_w_.push_back(store.add(p + ".w2.weight", {C_, F_}, Init::normal(down_init_std), true));
    } else {
      up_w_.push_back(store.add(p + ".c_fc.weight", {F_, C_}, Init::normal(std), true));
      up_b_.push_back(store.add(p + ".c_fc.bias", {F_}, Init::zeros(), false));
      down_w_.push_back(store.add(p + ".c_proj.weight", {C_, F_}, Init::normal(down_init_std), true));
      down_b_.push_back(store.add(p + ".c_proj.bias", {C_}, Init::zeros(), false));
    }
  }
  if (cfg.moe_shared_expert) {
    const std::string p = prefix + ".shared_expert";
    if (swiglu_) {
      shared_ = std::make_unique<Mlp>(store, backend, cfg, max_rows,
                                      std::vector<Linear::Piece>{{p + ".gate_proj.weight", "", F_},
                                                                 {p + ".up_proj.weight", "", F_}},
                                      Linear::Piece{p + ".down_proj.weight", "", C_}, down_init_std);
    } else {
      shared_ = std::make_unique<Mlp>(store, backend, cfg, max_rows,
                                      std::vector<Linear::Piece>{{p + ".c_fc.weight", p + ".c_fc.bias", F_}},
                                      Linear::Piece{p + ".c_proj.weight", p + ".c_proj.bias", C_}, down_init_std);
    }
  }
  const int64_t N = max_rows, M = max_rows * k_, U = swiglu_ ? 2 * F_ : F_;
  auto floats = [&](int64_t n) { return Buffer(backend, size_t(n) * sizeof(float)); };
  logits_ = floats(N * E_);
  probs_ = floats(N * E_);
  dlogits_ = floats(N * E_);
  dprobs_ = floats(N * E_);
  gate_ = floats(N * k_);
  dgate_ = floats(N * k_);
  expert_.resize(size_t(N * k_));
  xin_ = floats(M * C_);
  hup_ = floats(M * U);
  act_ = floats(M * F_);
  out_ = floats(M * C_);
  dout_ = floats(M * C_);
  dact_ = floats(M * F_);
  dhup_ = floats(M * U);
  dxin_ = floats(M * C_);
  y_ = floats(N * C_);
  dx_ = floats(N * C_);
}

void Moe::expert_forward(int64_t e, int64_t r0, int64_t rows) {
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  float* h = hup_.f32() + r0 * U;
  float* a = act_.f32() + r0 * F_;
  float* o = out_.f32() + r0 * C_;
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, rows, U, C_, 1.0f, xin_.f32() + r0 * C_, C_, up_w_[size_t(e)]->w, C_,
                               0.0f, h, U));
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_forward(a, h, rows, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::bias_add_rows(h, up_b_[size_t(e)]->w, rows, F_));
    CASTOR_KERNEL_CHECK(kc::gelu_forward(a, h, rows * F_));
  }
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, rows, C_, F_, 1.0f, a, F_, down_w_[size_t(e)]->w, F_, 0.0f, o, C_));
  if (!swiglu_) CASTOR_KERNEL_CHECK(kc::bias_add_rows(o, down_b_[size_t(e)]->w, rows, C_));
}

void Moe::expert_backward(int64_t e, int64_t r0, int64_t rows) {
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  const float* d = dout_.f32() + r0 * C_;
  const float* h = hup_.f32() + r0 * U;
  const float* a = act_.f32() + r0 * F_;
  const float* xin = xin_.f32() + r0 * C_;
  float* da = dact_.f32() + r0 * F_;
  float* dh = dhup_.f32() + r0 * U;
  const Param& wd = *down_w_[size_t(e)];
  const Param& wu = *up_w_[size_t(e)];
  CASTOR_KERNEL_CHECK(kc::gemm(false, false, rows, F_, C_, 1.0f, d, C_, wd.w, F_, 0.0f, da, F_));
  CASTOR_KERNEL_CHECK(kc::gemm(true, false, C_, F_, rows, 1.0f, d, C_, a, F_, 1.0f, wd.g, F_));
  if (!swiglu_) CASTOR_KERNEL_CHECK(kc::bias_grad_accumulate(down_b_[size_t(e)]->g, d, rows, C_));
  if (swiglu_) {
    CASTOR_KERNEL_CHECK(kc::swiglu_backward(dh, da, h, rows, F_));
  } else {
    CASTOR_KERNEL_CHECK(kc::gelu_backward(dh, da, h, rows * F_));
    CASTOR_KERNEL_CHECK(kc::bias_grad_accumulate(up_b_[size_t(e)]->g, dh, rows, F_));
  }
  CASTOR_KERNEL_CHECK(kc::gemm(false, false, rows, C_, U, 1.0f, dh, U, wu.w, C_, 0.0f, dxin_.f32() + r0 * C_, C_));
  CASTOR_KERNEL_CHECK(kc::gemm(true, false, U, C_, rows, 1.0f, dh, U, xin, C_, 1.0f, wu.g, C_));
}

Tensor Moe::forward(const Pass& pass, Tensor x) {
  const int64_t N = pass.rows();
  x_ = x.f32();
  // route
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, N, E_, C_, 1.0f, x_, C_, router_->w, C_, 0.0f, logits_.f32(), E_));
  CASTOR_KERNEL_CHECK(kc::router_topk(logits_.f32(), N, E_, k_, k_ >= 2, probs_.f32(), expert_.data(), gate_.f32()));
  CASTOR_KERNEL_CHECK(kc::moe_balance_loss(probs_.f32(), expert_.data(), N, E_, k_, &stats_.balance, 0.0f, nullptr,
                                           nullptr));
  CASTOR_KERNEL_CHECK(kc::router_z_loss(logits_.f32(), N, E_, &stats_.router_z, 0.0f, nullptr));
  const int64_t capacity =
      capacity_factor_ > 0 ? int64_t(std::ceil(capacity_factor_ * double(N * k_) / double(E_))) : -1;
  dispatcher_->plan(expert_.data(), N, k_, capacity);
  // dispatch -> compute -> combine
  dispatcher_->dispatch(x_, C_, xin_.f32());
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  stats_.min_load = INT64_MAX;
  stats_.max_load = 0;
  for (int64_t e = 0; e < dispatcher_->local_experts(); ++e) {
    const int64_t rows = off[size_t(e) + 1] - off[size_t(e)];
    stats_.min_load = std::min(stats_.min_load, rows);
    stats_.max_load = std::max(stats_.max_load, rows);
    if (rows > 0) expert_forward(e, off[size_t(e)], rows);
  }
  stats_.assignments = N * k_;
  stats_.dropped = dispatcher_->dropped();
  dispatcher_->combine(out_.f32(), gate_.f32(), C_, y_.f32());
  if (shared_) {
    Tensor s = shared_->forward(pass, x);
    CASTOR_KERNEL_CHECK(kc::add(y_.f32(), y_.f32(), s.f32(), N * C_));
  }
  return rows_view(y_.f32(), N, C_);
}

Tensor Moe::backward(const Pass& pass, Tensor dy) {
  const int64_t N = pass.rows();
  dispatcher_->combine_backward(dy.f32(), out_.f32(), gate_.f32(), C_, dout_.f32(), dgate_.f32());
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  for (int64_t e = 0; e < dispatcher_->local_experts(); ++e) {
    const int64_t rows = off[size_t(e) + 1] - off[size_t(e)];
    if (rows > 0) expert_backward(e, off[size_t(e)], rows);
  }
  dispatcher_->dispatch_backward(dxin_.f32(), C_, dx_.f32());
  // Router: gates, balance loss (through the probabilities) and z-loss (through the logits).
  std::fill(dprobs_.f32(), dprobs_.f32() + N * E_, 0.0f);
  double unused = 0.0;
  CASTOR_KERNEL_CHECK(kc::moe_balance_loss(probs_.f32(), expert_.data(), N, E_, k_, &unused, pass.balance_scale,
                                           dprobs_.f32(), nullptr));
  CASTOR_KERNEL_CHECK(kc::router_topk_backward(probs_.f32(), expert_.data(), gate_.f32(), dgate_.f32(),
                                               dprobs_.f32(), N, E_, k_, k_ >= 2, dlogits_.f32()));
  CASTOR_KERNEL_CHECK(kc::router_z_loss(logits_.f32(), N, E_, &unused, pass.z_scale, dlogits_.f32()));
  CASTOR_KERNEL_CHECK(kc::gemm(true, false, E_, C_, N, 1.0f, dlogits_.f32(), E_, x_, C_, 1.0f, router_->g, C_));
  CASTOR_KERNEL_CHECK(kc::gemm(false, false, N, C_, E_, 1.0f, dlogits_.f32(), E_, router_->w, C_, 1.0f, dx_.f32(), C_));
  if (shared_) {
    Tensor ds = shared_->backward(pass, dy);
    CASTOR_KERNEL_CHECK(kc::add(dx_.f32(), dx_.f32(), ds.f32(), N * C_));
  }
  return rows_view(dx_.f32(), N, C_);
}

}  // namespace castor::nn
