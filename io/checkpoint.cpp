// Checkpoint save/load: params under "model/<name>", moments under "optim/exp_avg/<name>"
// and "optim/exp_avg_sq/<name>", scalars as attributes (see docs/data-format.md).
#include "io/checkpoint.h"

#include <vector>

#include "core/error.h"
#include "io/checkpoint_file.h"

namespace castor::io {

void write_model_config(CheckpointWriter& w, const ModelConfig& m) {
  w.write_string("model.family", family_name(m.family));
  w.write_int64("model.vocab_size", m.vocab_size);
  w.write_int64("model.d_model", m.d_model);
  w.write_int64("model.n_layers", m.n_layers);
  w.write_int64("model.n_heads", m.n_heads);
  w.write_int64("model.n_kv_heads", m.kv_heads());
  w.write_int64("model.d_ff", m.ffn_dim());
  w.write_int64("model.max_seq_len", m.max_seq_len);
  w.write_double("model.norm_eps", m.norm_eps);
  w.write_double("model.rope_theta", m.rope_theta);
  w.write_double("model.init_std", m.init_std);
  w.write_int64("model.moe_experts", m.moe_experts);
  w.write_int64("model.moe_top_k", m.moe_top_k);
  w.write_int64("model.moe_every", m.moe_every);
  w.write_int64("model.moe_d_ff", m.moe_experts > 0 ? m.expert_ffn_dim() : 0);
  w.write_double("model.moe_capacity", m.moe_capacity);
  w.write_int64("model.moe_shared_expert", m.moe_shared_expert ? 1 : 0);
  w.write_int64("model.image_patch", m.image_patch);
  w.write_int64("model.image_channels", m.image_channels);
  w.write_int64("model.image_grid", m.image_patch > 0 ? m.image_grid_size() : 0);
  w.write_int64("model.audio_stack", m.audio_stack);
  w.write_int64("model.n_mels", m.n_mels);
}

void save_checkpoint(const std::string& path, const ModelConfig& model, const ParamStore& store,
                     const ArenaMoments* moments, const TrainState& state) {
  CheckpointWriter w(path);
  write_model_config(w, model);
  w.write_int64("train.step", state.step);
  w.write_int64("train.seed", int64_t(state.seed));
  w.write_int64("loader.epoch", state.cursor.epoch);
  w.write_int64("loader.index", state.cursor.index);
  for (const Param& p : store.params()) {
    w.write_tensor("model/" + p.name, p.shape.dims(), p.w);
    if (moments) {
      w.write_tensor("optim/exp_avg/" + p.name, p.shape.dims(), moments->exp_avg + p.offset);
      w.write_tensor("optim/exp_avg_sq/" + p.name, p.shape.dims(), moments->exp_avg_sq + p.offset);
    }
  }
  if (moments) w.write_int64("optim.step", state.optim_steps);
  if (state.loss_scale > 0) {
    w.write_double("optim.loss_scale", state.loss_scale);
    w.write_int64("optim.loss_scale_clean", state.loss_scale_clean);
  }
  w.commit();
}

ModelConfig read_model_config(const std::string& path) {
  CheckpointReader r(path);
  ModelConfig m;
  m.family = parse_family(r.read_string("model.family"));
  m.vocab_size = r.read_int64("model.vocab_size");
  m.d_model = r.read_int64("model.d_model");
  m.n_layers = r.read_int64("model.n_layers");
  m.n_heads = r.read_int64("model.n_heads");
  m.n_kv_heads = r.read_int64("model.n_kv_heads");
  m.d_ff = r.read_int64("model.d_ff");
  m.max_seq_len = r.read_int64("model.max_seq_len");
  m.norm_eps = float(r.read_double("model.norm_eps"));
  m.rope_theta = float(r.read_double("model.rope_theta"));
  m.init_std = float(r.read_double("model.init_std"));
  if (r.has("model.moe_experts")) {  // checkpoints written before the MoE model have none of these
    m.moe_experts = r.read_int64("model.moe_experts");
    m.moe_top_k = r.read_int64("model.moe_top_k");
    m.moe_every = r.read_int64("model.moe_every");
    m.moe_d_ff = r.read_int64("model.moe_d_ff");
    m.moe_capacity = r.read_double("model.moe_capacity");
    m.moe_shared_expert = r.read_int64("model.moe_shared_expert") != 0;
    m.image_patch = r.read_int64("model.image_patch");
    m.image_channels = r.read_int64("model.image_channels");
    m.image_grid = r.read_int64("model.image_grid");
    m.audio_stack = r.read_int64("model.audio_stack");
    m.n_mels = r.read_int64("model.n_mels");
  }
  try {
    m.validate();
  } catch (const Error& e) {
    CASTOR_FAIL(path, ": stored model config is invalid: ", e.what());
  }
  return m;
}

void load_checkpoint(const std::string& path, const ModelConfig& model, ParamStore& store,
                     const ArenaMoments* moments, TrainState* state) {
  const ModelConfig saved = read_model_config(path);
  auto same = [&](const char* field, auto a, auto b) {
    CASTOR_CHECK(a == b, path, ": checkpoint has --model.", field, " = ", a, " but the run has ", b);
  };
  same("family", family_name(saved.family), family_name(model.family));
  same("vocab_size", saved.vocab_size, model.vocab_size);
  same("d_model", saved.d_model, model.d_model);
  same("n_layers", saved.n_layers, model.n_layers);
  same("n_heads", saved.n_heads, model.n_heads);
  same("n_kv_heads", saved.kv_heads(), model.kv_heads());
  same("d_ff", saved.ffn_dim(), model.ffn_dim());
  same("max_seq_len", saved.max_seq_len, model.max_seq_len);
  same("moe_experts", saved.moe_experts, model.moe_experts);
  if (model.moe_experts > 0) {
    same("moe_top_k", saved.moe_top_k, model.moe_top_k);
    same("moe_every", saved.moe_every, model.moe_every);
    same("moe_d_ff", saved.expert_ffn_dim(), model.expert_ffn_dim());
    same("moe_shared_expert", saved.moe_shared_expert, model.moe_shared_expert);
  }
  same("image_patch", saved.image_patch, model.image_patch);
  same("image_channels", saved.image_channels, model.image_channels);
  same("image_grid", saved.image_patch > 0 ? saved.image_grid_size() : 0,
       model.image_patch > 0 ? model.image_grid_size() : 0);
  same("audio_stack", saved.audio_stack, model.audio_stack);
  same("n_mels", saved.n_mels, model.n_mels);
  CheckpointReader r(path);
  for (Param& p : store.params()) {
    r.read_tensor("model/" + p.name, p.shape.dims(), p.w);
    if (moments) {
      r.read_tensor("optim/exp_avg/" + p.name, p.shape.dims(), moments->exp_avg + p.offset);
      r.read_tensor("optim/exp_avg_sq/" + p.name, p.shape.dims(), moments->exp_avg_sq + p.offset);
    }
  }
  if (state) {
    if (moments) state->optim_steps = r.read_int64("optim.step");
    state->step = r.read_int64("train.step");
    state->seed = uint64_t(r.read_int64("train.seed"));
    state->cursor.epoch = r.read_int64("loader.epoch");
    state->cursor.index = r.read_int64("loader.index");
    if (r.has("optim.loss_scale")) {
      state->loss_scale = r.read_double("optim.loss_scale");
      state->loss_scale_clean = r.read_int64("optim.loss_scale_clean");
    }
  }
}

}  // namespace castor::io
