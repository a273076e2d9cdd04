// parity_dump --multimodal CASE: writes what tests/python/test_multimodal_parity.py compares
// against PyTorch: a tiny multimodal MoE model's weights (model/<name>), a hand-built batch
// with paired and unpaired images, an audio clip, a prompt/response document, padding and
// reconstruction masks (batch/*), every loss term (losses/<term>, losses/total) and the
// gradient of the total (grad/<name>); with distillation also the teacher (teacher/<name>).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/model.h"
#include "io/checkpoint.h"
#include "support/multimodal_batch.h"

namespace castor {

namespace {

using testing::HandBatch;
using testing::make_batch;

struct Case {
  ModelConfig model;
  LossConfig loss;
  bool teacher = false;
};

Case make_case(const std::string& name) {
  Case c;
  ModelConfig& m = c.model;
  m.vocab_size = 97;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.max_seq_len = 32;
  m.init_std = 0.1f;  // larger than GPT-2's so gradients are far from zero
  m.moe_experts = 4;
  m.moe_d_ff = 48;
  m.image_patch = 2;
  m.image_channels = 1;
  m.image_grid = 4;
  m.audio_stack = 2;
  m.n_mels = 3;
  LossConfig& l = c.loss;
  l.lm = 1.0f;
  l.align = 0.7f;
  l.contrastive = 0.5f;
  l.reconstruction = 0.3f;
  l.balance = 0.1f;
  l.router_z = 0.05f;
  l.temperature = 0.5f;
  l.mask_ratio = 0.5f;
  if (name == "gpt2-top1-capacity") {
    m.family = Family::kGpt2;
    m.moe_top_k = 1;
    m.moe_capacity = 1.0;
  } else if (name == "llama-top2-dropless") {
    m.family = Family::kLlama;
    m.n_kv_heads = 2;
    m.moe_top_k = 2;
    m.moe_every = 2;  // layer 0 dense, layer 1 MoE
  } else if (name == "llama-top2-capacity-shared") {
    m.family = Family::kLlama;
    m.moe_top_k = 2;
    m.moe_capacity = 0.75;
    m.moe_shared_expert = true;
  } else if (name == "gpt2-top2-distill") {
    m.family = Family::kGpt2;
    m.moe_top_k = 2;
    l.distill = 0.5f;
    l.distill_temperature = 2.0f;
    c.teacher = true;
  } else {
    CASTOR_FAIL("unknown case '", name, "' (gpt2-top1-capacity, llama-top2-dropless, llama-top2-capacity-shared, "
                "gpt2-top2-distill)");
  }
  return c;
}

void write_config(io::CheckpointWriter& w, const ModelConfig& m, const std::string& prefix) {
  io::CheckpointWriter* ww = &w;
  if (prefix.empty()) {
    io::write_model_config(*ww, m);
    return;
  }
  // The teacher's config under "teacher.model.*": the same keys with a prefix.
  w.write_string(prefix + "model.family", family_name(m.family));
  const std::pair<const char*, int64_t> ints[] = {
      {"vocab_size", m.vocab_size},   {"d_model", m.d_model},         {"n_layers", m.n_layers},
      {"n_heads", m.n_heads},         {"n_kv_heads", m.kv_heads()},   {"d_ff", m.ffn_dim()},
      {"max_seq_len", m.max_seq_len}, {"moe_experts", m.moe_experts}, {"moe_top_k", m.moe_top_k},
      {"moe_every", m.moe_every},     {"moe_d_ff", m.moe_d_ff},       {"moe_shared_expert", m.moe_shared_expert},
      {"image_patch", m.image_patch}, {"image_channels", m.image_channels},
      {"image_grid", m.image_patch > 0 ? m.image_grid_size() : 0},
      {"audio_stack", m.audio_stack}, {"n_mels", m.n_mels}};
  for (const auto& [k, v] : ints) w.write_int64(prefix + "model." + k, v);
  w.write_double(prefix + "model.norm_eps", m.norm_eps);
  w.write_double(prefix + "model.rope_theta", m.rope_theta);
  w.write_double(prefix + "model.moe_capacity", m.moe_capacity);
}

template <typename T>
void write_ints(io::CheckpointWriter& w, const std::string& name, const std::vector<T>& v,
                std::vector<int64_t> shape) {
  std::vector<float> f(v.begin(), v.end());
  w.write_tensor(name, shape, f.data());
}

}  // namespace

int multimodal_dump(const std::string& name, const std::string& out) {
  Case c = make_case(name);
  auto backend = make_cpu_backend(0);
  const HandBatch b = make_batch(c.model);
  const ModelInput in = b.view();
  ParamStore store;
  Transformer model(c.model, store, *backend, b.B, b.T);
  store.allocate(*backend);
  store.initialize(42);
  ParamStore teacher_store;
  std::unique_ptr<Transformer> teacher;
  if (c.teacher) {  // a smaller, dense, image-only teacher
    ModelConfig t;
    t.family = Family::kGpt2;
    t.vocab_size = c.model.vocab_size;
    t.d_model = 16;
    t.n_layers = 1;
    t.n_heads = 2;
    t.max_seq_len = 32;
    t.init_std = 0.3f;
    t.image_patch = 2;
    t.image_grid = 4;
    teacher = std::make_unique<Transformer>(t, teacher_store, *backend, b.B, b.T);
    teacher_store.allocate(*backend);
    teacher_store.initialize(43);
    model.set_teacher(teacher.get());
  }
  const uint64_t seed = 11;
  io::CheckpointWriter w(out);
  write_config(w, c.model, "");
  const LossConfig& l = c.loss;
  const std::pair<const char*, double> loss_attrs[] = {
      {"lm", l.lm},           {"align", l.align},     {"contrastive", l.contrastive},
      {"reconstruction", l.reconstruction},            {"balance", l.balance},
      {"router_z", l.router_z}, {"distill", l.distill}, {"temperature", l.temperature},
      {"distill_temperature", l.distill_temperature}};
  for (const auto& [k, v] : loss_attrs) w.write_double(std::string("loss.") + k, v);
  if (teacher) write_config(w, teacher->config(), "teacher.");
  for (const Param& p : store.params()) w.write_tensor("model/" + p.name, p.shape.dims(), p.w);
  for (const Param& p : teacher_store.params()) w.write_tensor("teacher/" + p.name, p.shape.dims(), p.w);
  std::vector<uint8_t> masked(size_t(b.B * b.T), 0);
  for (const std::vector<int32_t>* pos : {&b.patch_pos, &b.frame_pos})
    for (int32_t p : *pos) masked[size_t(p)] = media_masked(seed, b.sample[size_t(p / b.T)], p % b.T, l.mask_ratio);
  const std::vector<int64_t> bt{b.B, b.T};
  write_ints(w, "batch/ids", b.ids, bt);
  write_ints(w, "batch/targets", b.targets, bt);
  write_ints(w, "batch/modality", b.modality, bt);
  write_ints(w, "batch/align", b.align, bt);
  write_ints(w, "batch/segment_begin", b.segment_begin, bt);
  write_ints(w, "batch/masked", masked, bt);
  const int64_t np = int64_t(b.patch_pos.size()), nf = int64_t(b.frame_pos.size());
  w.write_tensor("batch/patches", {np, c.model.patch_dim()}, b.patches.data());
  write_ints(w, "batch/patch_pos", b.patch_pos, {np});
  write_ints(w, "batch/patch_grid", b.patch_grid, {np, 2});
  w.write_tensor("batch/frames", {nf, c.model.frame_dim()}, b.frames.data());
  write_ints(w, "batch/frame_pos", b.frame_pos, {nf});
  std::vector<int32_t> pairs;
  for (const MediaPair& p : b.pairs)
    pairs.insert(pairs.end(), {p.row, int32_t(p.media), p.media_begin, p.media_end, p.text_begin, p.text_end});
  write_ints(w, "batch/pairs", pairs, {int64_t(b.pairs.size()), 6});

  store.zero_grads();
  const float scale = 1.0f;
  const LossValues v = model.forward(in, l, &scale, seed);
  model.backward();
  for (int t = 0; t < kLossTerms; ++t) {
    if (v.items[size_t(t)] == 0) continue;
    const float x = float(v.value[size_t(t)]);
    w.write_tensor(std::string("losses/") + loss_term_name(LossTerm(t)), {1}, &x);
    std::printf("%-15s %.7f (%lld items)\n", loss_term_name(LossTerm(t)), double(x),
                static_cast<long long>(v.items[size_t(t)]));
  }
  const float total = float(v.total);
  w.write_tensor("losses/total", {1}, &total);
  for (const nn::MoeStats* s : model.moe_stats())
    std::printf("moe layer: %lld assignments, %lld dropped, load %lld..%lld\n", static_cast<long long>(s->assignments),
                static_cast<long long>(s->dropped), static_cast<long long>(s->min_load),
                static_cast<long long>(s->max_load));
  for (const Param& p : store.params()) w.write_tensor("grad/" + p.name, p.shape.dims(), p.g);
  w.commit();
  return 0;
}

}  // namespace castor
