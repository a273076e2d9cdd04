// Finite differences of the whole multimodal MoE objective (docs/model.md) on a hand-built
// batch: the adapters (patch projection, 2-D positions, mask and modality embeddings), the
// router (through the gates and the balance and z-losses), the experts behind the
// permutation, the contrastive and reconstruction heads and the LM head. Each sampled
// coordinate of the analytic gradient must match a central difference of the total loss.
// Every token is routed to every expert (k = E): a finite step must not change which
// experts are chosen (a jump, not a slope); kernels/moe_test checks top-k < E on its own.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/model.h"
#include "support/gradcheck.h"
#include "support/multimodal_batch.h"

namespace castor {
namespace {

ModelConfig small_config(Family family, int64_t experts, bool shared) {
  ModelConfig m;
  m.family = family;
  m.vocab_size = 53;
  m.d_model = 16;
  m.n_layers = 1;
  m.n_heads = 2;
  m.max_seq_len = 24;
  m.init_std = 0.2f;
  m.moe_experts = experts;
  m.moe_top_k = experts;
  m.moe_d_ff = 12;
  m.moe_shared_expert = shared;
  m.image_patch = 2;
  m.image_grid = 4;
  m.audio_stack = 2;
  m.n_mels = 3;
  return m;
}

LossConfig all_terms() {
  LossConfig l;
  l.align = 0.7f;
  l.contrastive = 0.5f;
  l.reconstruction = 0.3f;
  l.balance = 0.2f;
  l.router_z = 0.1f;
  l.temperature = 0.5f;
  l.mask_ratio = 0.5f;
  return l;
}

void check_model(const ModelConfig& cfg, const std::vector<std::string>& names) {
  auto backend = make_cpu_backend(1);
  const testing::HandBatch b = testing::make_batch(cfg);
  const ModelInput in = b.view();
  ParamStore store;
  Transformer model(cfg, store, *backend, b.B, b.T);
  store.allocate(*backend);
  store.initialize(5);
  const LossConfig losses = all_terms();
  const float scale = 1.0f;
  store.zero_grads();
  const LossValues v = model.forward(in, losses, &scale, 3);
  model.backward();
  for (int t = 0; t < kLossTerms; ++t) {
    if (LossTerm(t) != LossTerm::distill) {
      EXPECT_GT(v.items[size_t(t)], 0) << loss_term_name(LossTerm(t));
    }
  }
  auto total = [&]() { return model.forward(in, losses, nullptr, 3).total; };
  for (const std::string& name : names) {
    Param* p = store.find(name);
    ASSERT_NE(p, nullptr) << name;
    std::vector<float> x(p->w, p->w + p->numel()), g(p->g, p->g + p->numel());
    auto loss = [&]() {
      std::copy(x.begin(), x.end(), p->w);
      return total();
    };
    testing::expect_gradient_matches(x, g, loss, name.c_str(), 12, 2e-3f, 3e-2, 3e-3);
    std::copy(x.begin(), x.end(), p->w);
  }
}

TEST(MultimodalGradcheck, LlamaThreeExpertsShared) {
  const std::string L = "model.layers.0.block_sparse_moe";
  check_model(small_config(Family::kLlama, 3, true),
              {"model.image_adapter.proj.weight", "model.image_adapter.proj.bias", "model.image_adapter.row_embed",
               "model.image_adapter.col_embed", "model.image_adapter.mask_embed", "model.audio_adapter.proj.weight",
               "model.audio_adapter.mask_embed", "model.modality_embed.weight", L + ".gate.weight",
               L + ".experts.1.w1.weight", L + ".experts.2.w2.weight", L + ".shared_expert.up_proj.weight",
               "heads.contrastive.image.weight", "heads.contrastive.audio.weight", "heads.contrastive.text.weight",
               "heads.reconstruct.image.weight", "heads.reconstruct.audio.bias", "lm_head.weight",
               "model.embed_tokens.weight"});
}

TEST(MultimodalGradcheck, Gpt2TwoExperts) {
  check_model(small_config(Family::kGpt2, 2, false),
              {"transformer.image_adapter.proj.weight", "transformer.audio_adapter.proj.bias",
               "transformer.h.0.mlp.router.weight", "transformer.h.0.mlp.experts.0.c_fc.bias",
               "transformer.h.0.mlp.experts.1.c_proj.weight", "transformer.wpe.weight", "transformer.wte.weight"});
}

}  // namespace
}  // namespace castor
