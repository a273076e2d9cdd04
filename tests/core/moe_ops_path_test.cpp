// The MoE layer's backend-ops path (how it runs on GPUs: the MoE kernels and one GEMM per
// expert through backend.ops()) against its cpu task path, both on the cpu backend with the
// same weights: output, input gradient, every parameter gradient and the router statistics
// agree, for both families, dropless and with capacity dropping, with a shared expert.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/nn/moe.h"
#include "support/gradcheck.h"

namespace castor::nn {
namespace {

struct Case {
  Family family;
  double capacity;
  bool shared;
};

class MoeOpsPath : public ::testing::TestWithParam<Case> {};

double max_rel(const float* a, const float* b, int64_t n) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, double(std::abs(a[i] - b[i])));
    den = std::max(den, double(std::abs(b[i])));
  }
  return den > 0 ? num / den : num;
}

TEST_P(MoeOpsPath, MatchesTaskPath) {
  const Case c = GetParam();
  ModelConfig cfg;
  cfg.family = c.family;
  cfg.d_model = 24;
  cfg.n_heads = 4;
  cfg.moe_experts = 6;
  cfg.moe_top_k = 2;
  cfg.moe_d_ff = 20;
  cfg.moe_capacity = c.capacity;
  cfg.moe_shared_expert = c.shared;
  cfg.init_std = 0.3f;
  const int64_t N = 37;
  auto backend = make_cpu_backend(1);
  ParamStore s_task, s_ops;
  Moe task(s_task, *backend, cfg, N, "moe", 0.2f);
  Moe ops(s_ops, *backend, cfg, N, "moe", 0.2f, nullptr, nullptr, /*ops_path=*/true);
  for (ParamStore* s : {&s_task, &s_ops}) {
    s->allocate(*backend);
    s->initialize(17);
    s->zero_grads();
  }
  ASSERT_EQ(s_task.arena_elems(), s_ops.arena_elems());
  std::vector<float> x = testing::random_vector(size_t(N * cfg.d_model), 3);
  std::vector<float> dy = testing::random_vector(size_t(N * cfg.d_model), 4);
  Pass pass{1, N};
  pass.balance_scale = 0.3f;
  pass.z_scale = 0.05f;
  const Tensor yt = task.forward(pass, f32_tensor(x.data(), {N, cfg.d_model}));
  const Tensor yo = ops.forward(pass, f32_tensor(x.data(), {N, cfg.d_model}));
  EXPECT_LT(max_rel(yo.f32(), yt.f32(), N * cfg.d_model), 1e-5) << "output";
  EXPECT_NEAR(ops.stats().balance, task.stats().balance, 1e-9);
  EXPECT_NEAR(ops.stats().router_z, task.stats().router_z, 1e-9);
  EXPECT_EQ(ops.stats().dropped, task.stats().dropped);
  EXPECT_EQ(ops.stats().min_load, task.stats().min_load);
  EXPECT_EQ(ops.stats().max_load, task.stats().max_load);
  if (c.capacity > 0) {
    EXPECT_GT(task.stats().dropped, 0) << "the capacity case should drop something";
  }
  const Tensor dxt = task.backward(pass, f32_tensor(dy.data(), {N, cfg.d_model}));
  const Tensor dxo = ops.backward(pass, f32_tensor(dy.data(), {N, cfg.d_model}));
  EXPECT_LT(max_rel(dxo.f32(), dxt.f32(), N * cfg.d_model), 1e-5) << "input gradient";
  for (size_t i = 0; i < s_task.params().size(); ++i) {
    const Param& pt = s_task.params()[i];
    const Param& po = s_ops.params()[i];
    ASSERT_EQ(pt.name, po.name);
    EXPECT_LT(max_rel(po.g, pt.g, pt.numel()), 1e-5) << pt.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MoeOpsPath,
                         ::testing::Values(Case{Family::kGpt2, 0.0, false}, Case{Family::kGpt2, 0.8, false},
                                           Case{Family::kLlama, 0.0, true}, Case{Family::kLlama, 0.8, false}),
                         [](const auto& info) {
                           return std::string(info.param.family == Family::kGpt2 ? "gpt2" : "llama") +
                                  (info.param.capacity > 0 ? "_capacity" : "_dropless") +
                                  (info.param.shared ? "_shared" : "");
                         });

}  // namespace
}  // namespace castor::nn
