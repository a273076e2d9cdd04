// Generation with a KV cache: prefill + decode steps must give the logits of a full
// forward over the whole sequence (Transformer::last_logits) for both families, dense and
// dropless MoE, text-only and with image (and audio) positions in the prompt; decode steps
// of one and of several tokens; the cache's bounds; and training passes unaffected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model.h"
#include "support/gradcheck.h"

namespace castor {
namespace {

using testing::random_vector;

constexpr int64_t kVocab = 41;
constexpr int32_t kEot = 40;

struct Case {
  std::string name;
  Family family;
  bool moe;
  bool image;
  bool audio;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

ModelConfig config_for(const Case& c) {
  ModelConfig m;
  m.family = c.family;
  m.vocab_size = kVocab;
  m.d_model = 32;
  m.n_layers = 3;
  m.n_heads = 4;
  m.n_kv_heads = c.family == Family::kLlama ? 2 : 0;
  m.max_seq_len = 48;
  m.init_std = 0.2f;
  if (c.moe) {
    m.moe_experts = 4;
    m.moe_top_k = 2;
    m.moe_every = 2;  // layer 1 only: dense and MoE layers mixed
    m.moe_d_ff = 24;
    m.moe_capacity = 0.0;
    m.moe_shared_expert = c.family == Family::kLlama;
  }
  if (c.image) {
    m.image_patch = 2;
    m.image_channels = 3;
    m.image_grid = 4;
  }
  if (c.audio) {
    m.audio_stack = 2;
    m.n_mels = 5;
  }
  return m;
}

// A sequence: [image (3 x 2 patches)][audio (3 positions)][text], with the arrays a
// ModelInput views, so that any prefix of it can be run as a whole.
struct Sequence : ModelInputData {
  int64_t media = 0;  // positions before the text

  Sequence(const ModelConfig& m, int64_t text_len, uint64_t seed) {
    auto add = [&](Modality kind, int32_t begin) {
      ids.push_back(kEot);
      modality.push_back(uint8_t(kind));
      segment_begin.push_back(begin);
    };
    if (m.image_patch > 0) {
      const int32_t begin = int32_t(ids.size());
      for (int32_t r = 0; r < 3; ++r)
        for (int32_t c = 0; c < 2; ++c) {
          patch_pos.push_back(int32_t(ids.size()));
          patch_grid.push_back(r);
          patch_grid.push_back(c);
          add(Modality::image, begin);
        }
      patches = random_vector(size_t(6 * m.patch_dim()), seed + 1, 0.5f);
      for (float& v : patches) v += 0.5f;  // in [0, 1]
    }
    if (m.audio_stack > 0) {
      const int32_t begin = int32_t(ids.size());
      for (int k = 0; k < 3; ++k) {
        frame_pos.push_back(int32_t(ids.size()));
        add(Modality::audio, begin);
      }
      frames = random_vector(size_t(3 * m.frame_dim()), seed + 2, 2.0f);
    }
    media = int64_t(ids.size());
    std::vector<float> r = random_vector(size_t(text_len), seed + 3);
    for (int64_t t = 0; t < text_len; ++t) {
      ids.push_back(int32_t(std::abs(r[size_t(t)]) * 1000.0f) % (kVocab - 1));
      modality.push_back(uint8_t(Modality::text));
      segment_begin.push_back(int32_t(media));
    }
  }

  // The first `len` positions (len >= media) as one batch row.
  ModelInput prefix(int64_t len) const {
    ModelInput in = view();
    in.B = 1;
    in.T = len;
    return in;
  }
};

// max |a - b| over max(|b|): the relative error of a logit vector.
double rel_error(const float* a, const float* b, int64_t n) {
  double diff = 0.0, scale = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

class KvCacheTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    cfg_ = config_for(GetParam());
    model_ = std::make_unique<Transformer>(cfg_, store_, *be_, 1, cfg_.max_seq_len);
    store_.allocate(*be_);
    store_.initialize(7);
  }
  // Next-token logits after the first len positions, from a full forward.
  std::vector<float> full_logits(const Sequence& s, int64_t len) {
    std::vector<float> out(static_cast<size_t>(kVocab));
    model_->last_logits(s.prefix(len), out.data());
    return out;
  }
  ModelConfig cfg_;
  std::unique_ptr<Backend> be_ = make_cpu_backend(2);
  ParamStore store_;
  std::unique_ptr<Transformer> model_;
};

TEST_P(KvCacheTest, PrefillThenDecodeMatchesFullForward) {
  const Sequence seq(cfg_, 24, 11);
  const int64_t prompt = seq.media + 5;
  KvCache cache;
  model_->start_generation(cache);
  EXPECT_EQ(cache.capacity, cfg_.max_seq_len);
  EXPECT_EQ(cache.length, 0);
  std::vector<float> logits(size_t(kVocab) * 8);
  model_->prefill(seq.prefix(prompt), cache, logits.data());
  EXPECT_EQ(cache.length, prompt);
  EXPECT_LT(rel_error(logits.data(), full_logits(seq, prompt).data(), kVocab), 1e-5) << "prefill";

  // Decode steps of 1, 1, 3, 1, 8 and 1 tokens: every new row's logits.
  int64_t len = prompt;
  for (int64_t n : {1, 1, 3, 1, 8, 1}) {
    model_->decode(seq.ids.data() + len, n, cache, logits.data());
    EXPECT_EQ(cache.length, len + n);
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<float> ref = full_logits(seq, len + i + 1);
      EXPECT_LT(rel_error(logits.data() + i * kVocab, ref.data(), kVocab), 1e-5)
          << "decode step of " << n << " at position " << len + i;
    }
    len += n;
  }

  // A second prefill restarts the cache: a shorter prompt, then one step.
  model_->prefill(seq.prefix(seq.media + 2), cache, logits.data());
  EXPECT_EQ(cache.length, seq.media + 2);
  EXPECT_LT(rel_error(logits.data(), full_logits(seq, seq.media + 2).data(), kVocab), 1e-5) << "second prefill";
  model_->decode(seq.ids.data() + seq.media + 2, 1, cache, logits.data());
  EXPECT_LT(rel_error(logits.data(), full_logits(seq, seq.media + 3).data(), kVocab), 1e-5) << "after re-prefill";
}

TEST_P(KvCacheTest, FillsTheContextExactlyThenRefuses) {
  const int64_t T = cfg_.max_seq_len;
  const Sequence seq(cfg_, T, 5);
  KvCache cache;
  model_->start_generation(cache);
  std::vector<float> logits(static_cast<size_t>(kVocab));
  const int64_t prompt = seq.media + 1;
  model_->prefill(seq.prefix(prompt), cache, logits.data());
  for (int64_t len = prompt; len < T; ++len) model_->decode(seq.ids.data() + len, 1, cache, logits.data());
  EXPECT_EQ(cache.length, T);
  EXPECT_LT(rel_error(logits.data(), full_logits(seq, T).data(), kVocab), 1e-5) << "last position of the context";
  EXPECT_THROW(model_->decode(seq.ids.data(), 1, cache, logits.data()), Error);
  EXPECT_EQ(cache.length, T);
}

TEST_P(KvCacheTest, RefusesBadUse) {
  const Sequence seq(cfg_, 8, 3);
  std::vector<float> logits(size_t(2 * kVocab));
  KvCache unsized;
  EXPECT_THROW(model_->prefill(seq.prefix(seq.media + 2), unsized, logits.data()), Error);
  KvCache cache;
  model_->start_generation(cache);
  ModelInput two = seq.prefix(seq.media + 2);
  two.B = 2;
  two.T = 1;
  EXPECT_THROW(model_->prefill(two, cache, logits.data()), Error);
  // Another model's cache (different layer count) is refused.
  ModelConfig other = cfg_;
  other.n_layers = 1;
  other.moe_every = 1;
  ParamStore other_store;
  Transformer small(other, other_store, *be_, 1, 8);
  KvCache small_cache;
  small.start_generation(small_cache);
  EXPECT_EQ(small_cache.capacity, 8);
  EXPECT_THROW(model_->decode(seq.ids.data(), 1, small_cache, logits.data()), Error);
}

TEST_P(KvCacheTest, DecodeFromAnEmptyCacheIsATextPrefill) {
  const Sequence seq(ModelConfig{}, 12, 9);  // text only
  KvCache cache;
  model_->start_generation(cache);
  std::vector<float> logits(size_t(12 * kVocab));
  model_->decode(seq.ids.data(), 12, cache, logits.data());
  for (int64_t t = 0; t < 12; ++t) {
    std::vector<float> ref(static_cast<size_t>(kVocab));
    ModelInput in;
    in.B = 1;
    in.T = t + 1;
    in.ids = seq.ids.data();
    model_->last_logits(in, ref.data());
    EXPECT_LT(rel_error(logits.data() + t * kVocab, ref.data(), kVocab), 1e-5) << "row " << t;
  }
}

TEST_P(KvCacheTest, TrainingPassesUnchangedAfterGeneration) {
  const Sequence seq(ModelConfig{}, 17, 4);
  std::vector<int32_t> ids(seq.ids.begin(), seq.ids.begin() + 16), targets(seq.ids.begin() + 1, seq.ids.begin() + 17);
  const float scale = 1.0f;
  store_.zero_grads();
  const double before = model_->forward(ids.data(), targets.data(), 1, 16, &scale).loss_sum;
  model_->backward();
  std::vector<float> grads(store_.grads(), store_.grads() + store_.numel());

  KvCache cache;
  model_->start_generation(cache);
  std::vector<float> logits(static_cast<size_t>(kVocab));
  model_->prefill(seq.prefix(3), cache, logits.data());
  model_->decode(seq.ids.data() + 3, 1, cache, logits.data());
  EXPECT_THROW(model_->backward(), Error);  // no backward after a generation pass

  store_.zero_grads();
  const double after = model_->forward(ids.data(), targets.data(), 1, 16, &scale).loss_sum;
  model_->backward();
  EXPECT_EQ(before, after);
  EXPECT_TRUE(std::equal(grads.begin(), grads.end(), store_.grads()));
}

INSTANTIATE_TEST_SUITE_P(Models, KvCacheTest,
                         ::testing::Values(Case{"Gpt2Dense", Family::kGpt2, false, false, false},
                                           Case{"LlamaDense", Family::kLlama, false, false, false},
                                           Case{"Gpt2MoeImage", Family::kGpt2, true, true, false},
                                           Case{"LlamaMoeImageAudio", Family::kLlama, true, true, true},
                                           Case{"LlamaImage", Family::kLlama, false, true, false}),
                         case_name);

}  // namespace
}  // namespace castor
