// The whole model on the cuda backend against the cpu backend: the same weights (one seed)
// and batch give the same loss and every parameter gradient, then a few AdamW steps give
// the same loss curve. GPT-2 (LayerNorm, GELU, learned positions, tied head) and Llama
// (RMSNorm, SwiGLU, RoPE, grouped-query heads), with f32, bf16 and f16 activations, and a
// Llama with MoE layers (dropless top-2, the MoE kernels and one GEMM per expert).
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda/cuda_backend.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

ModelConfig parity_config(Family f, bool moe) {
  ModelConfig c;
  c.family = f;
  c.vocab_size = 211;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = f == Family::kLlama ? 2 : 0;
  c.max_seq_len = 48;
  c.init_std = 0.05f;
  if (moe) {  // layer 1 of 2: a dense and an MoE layer
    c.moe_experts = 4;
    c.moe_top_k = 2;
    c.moe_every = 2;
    c.moe_d_ff = 48;
  }
  return c;
}

// One model on one backend, its gradients and weights readable from the host.
struct ModelRun {
  ModelRun(Backend& backend, const ModelConfig& cfg, int64_t B, int64_t T, uint64_t seed)
      : backend(backend), model(cfg, store, backend, B, T) {
    store.allocate(backend);
    store.initialize(seed);
  }
  std::vector<float> host(const float* arena) {
    std::vector<float> out(store.arena_elems());
    backend.copy(out.data(), arena, out.size() * sizeof(float));
    backend.synchronize();
    return out;
  }
  // Mean next-token loss of one training forward + backward (gradients zeroed first).
  double train_pass(const std::vector<int32_t>& ids, const std::vector<int32_t>& targets, int64_t B, int64_t T) {
    store.zero_grads();
    const float scale = 1.0f;
    const kernels::cpu::XentResult r = model.forward(ids.data(), targets.data(), B, T, &scale);
    model.backward();
    return r.loss_sum / double(r.count);
  }
  Backend& backend;
  ParamStore store;
  Transformer model;
};

struct Case {
  Family family;
  DType activations;
  bool moe = false;
};

class CudaModelParity : public ::testing::TestWithParam<Case> {};

TEST_P(CudaModelParity, LossGradientsAndStepsMatchCpu) {
  const Case c = GetParam();
  const bool bf16 = c.activations != DType::f32;  // bf16 or f16: the 16-bit tolerances
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ModelConfig cfg = parity_config(c.family, c.moe);
  const int64_t B = 3, T = 40;
  std::vector<int32_t> ids = random_ints(size_t(B * T), seed, 0, int32_t(cfg.vocab_size - 1));
  std::vector<int32_t> targets = random_ints(size_t(B * T), seed + 1, -1, int32_t(cfg.vocab_size - 1));

  auto cpu_backend = make_cpu_backend(1);
  auto gpu_backend = make_cuda_backend(0, c.activations);
  ModelRun cpu(*cpu_backend, cfg, B, T, seed), gpu(*gpu_backend, cfg, B, T, seed);
  ASSERT_EQ(cpu.store.arena_elems(), gpu.store.arena_elems());

  // Loss and every gradient. bf16 rounds activations and weights (2^-9 relative) at every
  // layer: the loss agrees to ~1e-2, gradients in relative L2 to a few 1e-2.
  const double loss_tol = bf16 ? 2e-2 : 1e-5, grad_tol = bf16 ? 6e-2 : 1e-4;
  const double cpu_loss = cpu.train_pass(ids, targets, B, T);
  const double gpu_loss = gpu.train_pass(ids, targets, B, T);
  EXPECT_NEAR(gpu_loss, cpu_loss, loss_tol * std::abs(cpu_loss));
  const std::vector<float> cg = cpu.host(cpu.store.grads()), gg = gpu.host(gpu.store.grads());
  EXPECT_LT(rel_error(gg, cg), grad_tol) << "whole gradient arena";
  for (const Param& p : cpu.store.params()) {
    const std::vector<float> want(cg.begin() + long(p.offset), cg.begin() + long(p.offset) + p.numel());
    const std::vector<float> got(gg.begin() + long(p.offset), gg.begin() + long(p.offset) + p.numel());
    EXPECT_LT(rel_error(got, want), 2 * grad_tol) << p.name;
  }

  // A short training run on the same batch: the loss curves agree step by step.
  OptimConfig oc;
  oc.lr = 3e-3f;
  oc.warmup_steps = 0;
  AdamW cpu_opt(oc, cpu.store, *cpu_backend), gpu_opt(oc, gpu.store, *gpu_backend);
  for (int step = 0; step < 6; ++step) {
    const double lc = cpu.train_pass(ids, targets, B, T), lg = gpu.train_pass(ids, targets, B, T);
    EXPECT_NEAR(lg, lc, (bf16 ? 3e-2 : 1e-4) * std::abs(lc)) << "step " << step;
    cpu_opt.step(oc.lr, cpu_opt.grad_norm());
    gpu_opt.step(oc.lr, gpu_opt.grad_norm());
    gpu.store.refresh_compute_weights();
  }
  const std::vector<float> cw = cpu.host(cpu.store.weights()), gw = gpu.host(gpu.store.weights());
  EXPECT_LT(rel_error(gw, cw), bf16 ? 2e-2 : 1e-4) << "weights after 6 steps";
  expect_device_clean();
}

INSTANTIATE_TEST_SUITE_P(Families, CudaModelParity,
                         ::testing::Values(Case{Family::kGpt2, DType::f32}, Case{Family::kLlama, DType::f32},
                                           Case{Family::kGpt2, DType::bf16}, Case{Family::kLlama, DType::bf16},
                                           Case{Family::kLlama, DType::f16}, Case{Family::kLlama, DType::f32, true}),
                         [](const auto& info) {
                           return std::string(info.param.family == Family::kGpt2 ? "gpt2" : "llama") + "_" +
                                  std::string(dtype_name(info.param.activations)) + (info.param.moe ? "_moe" : "");
                         });

}  // namespace
}  // namespace castor::cuda_test
