// Config validation (each bad value names its option), the learning-rate schedule, and
// ParamStore layout and seeded initialisation.
#include <gtest/gtest.h>

#include <cmath>

#include "core/config.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/param.h"
#include "support/testing.h"

namespace castor {
namespace {

using castor::testing::error_of;

ModelConfig valid_model() {
  ModelConfig m;
  m.vocab_size = 100;
  return m;
}

TEST(Config, ModelRejectsBadValuesNamingTheOption) {
  EXPECT_NO_THROW(valid_model().validate());
  auto with = [](auto edit) {
    ModelConfig m = valid_model();
    edit(m);
    return error_of([&] { m.validate(); });
  };
  EXPECT_NE(with([](ModelConfig& m) { m.n_heads = 5; }).find("--model.n_heads (5) must divide --model.d_model (384)"),
            std::string::npos);
  EXPECT_NE(with([](ModelConfig& m) { m.n_kv_heads = 4; }).find("--model.n_kv_heads"), std::string::npos);
  EXPECT_NE(with([](ModelConfig& m) { m.d_model = -1; }).find("--model.d_model"), std::string::npos);
  EXPECT_NE(with([](ModelConfig& m) { m.vocab_size = 0; }).find("--model.vocab_size"), std::string::npos);
  EXPECT_NE(with([](ModelConfig& m) { m.norm_eps = 0; }).find("--model.norm_eps"), std::string::npos);
  EXPECT_NE(with([](ModelConfig& m) {
              m.family = Family::kLlama;
              m.d_model = 30;
              m.n_heads = 10;
            }).find("even head dimension"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_family("bert"); }).find("--model.family"), std::string::npos);
}

TEST(Config, OptimAndTrainRejectBadValues) {
  OptimConfig o;
  o.lr = -1e-3f;
  EXPECT_NE(error_of([&] { o.validate(); }).find("--optim.lr must be positive"), std::string::npos);
  o = OptimConfig{};
  o.beta2 = 1.0f;
  EXPECT_NE(error_of([&] { o.validate(); }).find("--optim.beta2"), std::string::npos);
  TrainConfig t;
  t.train_data = "x";
  ModelConfig m = valid_model();
  m.max_seq_len = 128;
  t.seq_len = 256;
  EXPECT_NE(error_of([&] { t.validate(m); }).find("--train.seq_len (256) exceeds --model.max_seq_len (128)"),
            std::string::npos);
  t.seq_len = 64;
  t.micro_batch = 0;
  EXPECT_NE(error_of([&] { t.validate(m); }).find("--train.micro_batch"), std::string::npos);
}

TEST(Config, NonEmbeddingParamsMatchTheModel) {
  for (Family f : {Family::kGpt2, Family::kLlama}) {
    ModelConfig m = valid_model();
    m.family = f;
    m.d_model = 64;
    m.n_heads = 4;
    m.n_layers = 3;
    m.n_kv_heads = f == Family::kLlama ? 2 : 0;
    m.max_seq_len = 32;
    auto be = make_cpu_backend(1);
    ParamStore store;
    Transformer model(m, store, *be, 1, 8);
    const int64_t embed = m.vocab_size * m.d_model * (m.tied_embeddings() ? 1 : 2) +
                          (f == Family::kGpt2 ? m.max_seq_len * m.d_model : 0);
    EXPECT_EQ(int64_t(store.numel()) - embed, m.non_embedding_params()) << family_name(f);
  }
}

TEST(Schedule, WarmupThenCosine) {
  OptimConfig o;
  o.lr = 1.0f;
  o.min_lr = 0.1f;
  o.warmup_steps = 10;
  EXPECT_FLOAT_EQ(learning_rate(o, 0, 110), 0.1f);
  EXPECT_FLOAT_EQ(learning_rate(o, 9, 110), 1.0f);
  EXPECT_FLOAT_EQ(learning_rate(o, 10, 110), 1.0f);
  EXPECT_NEAR(learning_rate(o, 60, 110), 0.55f, 1e-6);
  EXPECT_NEAR(learning_rate(o, 110, 110), 0.1f, 1e-6);
  EXPECT_NEAR(learning_rate(o, 500, 110), 0.1f, 1e-6);
}

TEST(ParamStore, ContiguousLayoutAndSeededInit) {
  auto be = make_cpu_backend(1);
  auto build = [&](ParamStore& s, bool reversed) {
    if (!reversed) {
      s.add("a", {3, 4}, Init::normal(1.0f), true);
      s.add("b", {5}, Init::ones(), false);
    } else {
      s.add("b", {5}, Init::ones(), false);
      s.add("a", {3, 4}, Init::normal(1.0f), true);
    }
    s.allocate(*be);
  };
  ParamStore s1, s2, s3;
  build(s1, false);
  build(s2, true);
  build(s3, false);
  EXPECT_EQ(s1.numel(), 17u);
  EXPECT_EQ(s1.find("b")->offset, 12u);
  EXPECT_EQ(s1.find("b")->w, s1.weights() + 12);
  s1.initialize(9);
  s2.initialize(9);
  s3.initialize(10);
  // Same seed: same values whatever the registration order; another seed differs.
  for (int i = 0; i < 12; ++i) EXPECT_EQ(s1.find("a")->w[i], s2.find("a")->w[i]);
  EXPECT_NE(s1.find("a")->w[0], s3.find("a")->w[0]);
  EXPECT_EQ(s1.find("b")->w[4], 1.0f);
  double mean = 0;
  for (int i = 0; i < 12; ++i) mean += s1.find("a")->w[i];
  EXPECT_LT(std::fabs(mean / 12), 1.0);
  EXPECT_THROW(s1.add("c", {1}, Init::zeros(), false), Error);
  ParamStore s4;
  s4.add("x", {1}, Init::zeros(), false);
  EXPECT_THROW(s4.add("x", {1}, Init::zeros(), false), Error);
}

}  // namespace
}  // namespace castor
