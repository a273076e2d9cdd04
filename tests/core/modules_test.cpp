// Finite-difference gradient checks for every module (Linear, Norm, Attention, Mlp,
// Block) and the whole Transformer in both families: the probe loss <y, r> for modules,
// the mean cross-entropy for the model; w.r.t. inputs and every parameter tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>

#include "core/model.h"
#include "core/nn/block.h"
#include "support/gradcheck.h"

namespace castor {
namespace {

using testing::expect_gradient_matches;
using testing::random_vector;

ModelConfig small_config(Family f) {
  ModelConfig c;
  c.family = f;
  c.vocab_size = 37;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = f == Family::kLlama ? 2 : 0;
  c.max_seq_len = 8;
  c.init_std = 0.2f;
  return c;
}

// Finite differences of `loss` w.r.t. every parameter against the grads in the store
// (computed by the caller's backward before this is called).
void check_param_grads(ParamStore& store, const std::function<double()>& loss, int samples = 24,
                       double rtol = 2e-2, double atol = 2e-3) {
  std::vector<float> grads(store.grads(), store.grads() + store.numel());
  for (Param& p : store.params()) {
    std::vector<float> w(p.w, p.w + p.numel());
    std::vector<float> g(grads.begin() + long(p.offset), grads.begin() + long(p.offset + size_t(p.numel())));
    auto loss_w = [&] {
      std::memcpy(p.w, w.data(), w.size() * sizeof(float));
      return loss();
    };
    expect_gradient_matches(w, g, loss_w, p.name.c_str(), samples, 1e-2f, rtol, atol);
    std::memcpy(p.w, w.data(), w.size() * sizeof(float));
  }
}

// Checks a module's input gradient and all its parameter gradients.
void check_module(nn::Module& m, ParamStore& store, const nn::Pass& pass, int64_t in_cols, int64_t out_cols,
                  const char* what) {
  const int64_t N = pass.rows();
  std::vector<float> x = random_vector(size_t(N * in_cols), 11);
  std::vector<float> r = random_vector(size_t(N * out_cols), 12);
  auto loss = [&] {
    Tensor y = m.forward(pass, f32_tensor(x.data(), {N, in_cols}));
    std::vector<float> out(y.f32(), y.f32() + N * out_cols);
    return testing::probe(out, r);
  };
  store.zero_grads();
  loss();
  Tensor dx = m.backward(pass, f32_tensor(r.data(), {N, out_cols}));
  std::vector<float> dxv(dx.f32(), dx.f32() + N * in_cols);
  expect_gradient_matches(x, dxv, loss, (std::string(what) + " dx").c_str());
  check_param_grads(store, loss);
}

// Each test registers one module in store_, then calls ready() to allocate and seed it.
class ModuleGrad : public ::testing::TestWithParam<Family> {
 protected:
  void ready(uint64_t seed) {
    store_.allocate(*be_);
    store_.initialize(seed);
  }
  ModelConfig c_ = small_config(GetParam());
  std::unique_ptr<Backend> be_ = make_cpu_backend(1);
  ParamStore store_;
};

TEST_P(ModuleGrad, Linear) {
  nn::Linear lin(store_, *be_, 12, 5, {{"a.weight", "a.bias", 3}, {"b.weight", "b.bias", 4}}, 0.5f);
  ready(3);
  check_module(lin, store_, {3, 4}, 5, 7, "linear");
}

TEST_P(ModuleGrad, Norm) {
  nn::Norm norm(store_, *be_, 12, 6, GetParam(), "ln", 1e-5f);
  ready(3);
  for (Param& p : store_.params())
    for (int64_t i = 0; i < p.numel(); ++i) p.w[i] += 0.1f * float(i % 3);  // not just ones/zeros
  check_module(norm, store_, {2, 6}, 6, 6, "norm");
}

TEST_P(ModuleGrad, Attention) {
  const ModelConfig& c = c_;
  const int64_t hd = c.head_dim();
  nn::Attention attn(store_, *be_, nn::single_device(), c, 2, 8,
                     {{"q.weight", "", c.n_heads * hd}, {"k.weight", "", c.kv_heads() * hd}, {"v.weight", "", c.kv_heads() * hd}},
                     {"o.weight", "", c.d_model}, 0.2f);
  ready(5);
  check_module(attn, store_, {2, 7}, c.d_model, c.d_model, "attention");
}

TEST_P(ModuleGrad, Mlp) {
  const ModelConfig& c = c_;
  std::vector<nn::Linear::Piece> up;
  if (GetParam() == Family::kLlama) up = {{"gate.weight", "", c.ffn_dim()}, {"up.weight", "", c.ffn_dim()}};
  else up = {{"fc.weight", "fc.bias", c.ffn_dim()}};
  nn::Mlp mlp(store_, *be_, nn::single_device(), c, 12, up, {"down.weight", GetParam() == Family::kLlama ? "" : "down.bias", c.d_model},
              0.2f);
  ready(6);
  check_module(mlp, store_, {2, 6}, c.d_model, c.d_model, "mlp");
}

TEST_P(ModuleGrad, Block) {
  const ModelConfig& c = c_;
  nn::Block block(store_, *be_, nn::single_device(), c, 0, 2, 8);
  ready(7);
  check_module(block, store_, {2, 8}, c.d_model, c.d_model, "block");
}

TEST_P(ModuleGrad, TransformerLoss) {
  const ModelConfig& c = c_;
  const int64_t B = 2, T = 8;
  Transformer model(c, store_, *be_, B, T);
  ready(8);
  std::vector<int32_t> ids(B * T), targets(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    ids[size_t(i)] = int32_t((i * 7 + 3) % c.vocab_size);
    targets[size_t(i)] = int32_t((i * 5 + 1) % c.vocab_size);
  }
  targets[3] = -1;
  auto loss = [&] {
    auto r = model.forward(ids.data(), targets.data(), B, T, nullptr);
    return r.loss_sum / double(r.count);
  };
  store_.zero_grads();
  const float scale = 1.0f / float(B * T - 1);
  auto r = model.forward(ids.data(), targets.data(), B, T, &scale);
  EXPECT_EQ(r.count, B * T - 1);
  model.backward();
  check_param_grads(store_, loss, 16, 3e-2, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Families, ModuleGrad, ::testing::Values(Family::kGpt2, Family::kLlama),
                         [](const auto& info) { return family_name(info.param); });

}  // namespace
}  // namespace castor
