// Typed configuration: the model, the optimizer and the training run. launch/ fills
// these from the INI file and --section.key overrides; everything else only sees the
// structs. validate() throws castor::Error naming the offending option.
#pragma once
#include <cstdint>
#include <string>

namespace castor {

enum class Family { kGpt2, kLlama };  // GPT-2: LayerNorm, GELU, learned positions, tied head
                                     // Llama: RMSNorm, SwiGLU, RoPE, untied head
Family parse_family(const std::string& s);  // "gpt2" | "llama"
std::string family_name(Family f);

struct ModelConfig {
  Family family = Family::kGpt2;
  int64_t vocab_size = 0;    // 0: take the tokenizer's vocabulary size from the data
  int64_t d_model = 384;
  int64_t n_layers = 6;
  int64_t n_heads = 6;
  int64_t n_kv_heads = 0;    // 0: = n_heads (multi-head); fewer: grouped-query
  int64_t d_ff = 0;          // 0: 4 * d_model (gpt2), multiple of 64 near 8/3 d_model (llama)
  int64_t max_seq_len = 1024;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  float init_std = 0.02f;
  // Mixture of experts (docs/model.md): 0 experts = dense feed-forward everywhere.
  int64_t moe_experts = 0;
  int64_t moe_top_k = 2;
  int64_t moe_every = 1;        // layer l is MoE when (l + 1) % moe_every == 0
  int64_t moe_d_ff = 0;         // expert hidden size; 0 = ffn_dim()
  double moe_capacity = 0.0;    // capacity factor; 0 = dropless
  bool moe_shared_expert = false;
  // Modality adapters: 0 = none.
  int64_t image_patch = 0;      // P: P x P pixel patches
  int64_t image_channels = 1;
  int64_t image_grid = 0;       // largest patch grid side (2-D position table); 0 = 16
  int64_t audio_stack = 0;      // log-mel frames per audio position
  int64_t n_mels = 0;           // log-mel bands (0: taken from the data)

  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t head_dim() const { return d_model / n_heads; }
  int64_t ffn_dim() const;
  bool tied_embeddings() const { return family == Family::kGpt2; }
  bool is_moe_layer(int64_t layer) const { return moe_experts > 0 && (layer + 1) % moe_every == 0; }
  int64_t moe_layers() const;
  int64_t expert_ffn_dim() const { return moe_d_ff > 0 ? moe_d_ff : ffn_dim(); }
  bool multimodal() const { return image_patch > 0 || audio_stack > 0; }
  int64_t image_grid_size() const { return image_grid > 0 ? image_grid : 16; }
  int64_t patch_dim() const { return image_patch * image_patch * image_channels; }
  int64_t frame_dim() const { return audio_stack * n_mels; }
  void validate() const;
  // Parameters excluding token/position embeddings and adapters, counting only the experts a
  // token uses (top-k, plus the shared expert): the active parameters, for MFU.
  int64_t non_embedding_params() const;
};

// Loss weights and their settings ([loss], docs/model.md "Losses").
struct LossConfig {
  float lm = 1.0f;
  float align = 1.0f;
  float contrastive = 0.0f;
  float reconstruction = 0.0f;
  float balance = 0.01f;
  float router_z = 0.001f;
  float distill = 0.0f;
  float temperature = 0.07f;         // InfoNCE temperature
  float mask_ratio = 0.25f;          // share of media positions masked for reconstruction
  float distill_temperature = 2.0f;
  std::string teacher;               // teacher checkpoint for distillation
  void validate() const;
};

struct OptimConfig {
  float lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup_steps = 100;
  float weight_decay = 0.1f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float grad_clip = 1.0f;  // 0 disables clipping
  void validate() const;
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t micro_batch = 4;
  int64_t seq_len = 256;
  int64_t grad_accum = 1;
  uint64_t seed = 1337;
  int64_t log_every = 10;
  int64_t eval_every = 100;   // 0: only at the end
  int64_t eval_batches = 8;
  int64_t ckpt_every = 0;     // 0: no periodic checkpoints (one at the end if out_dir set)
  int threads = 0;            // 0: all cores
  std::string device = "cpu";     // cpu | cuda (one GPU per rank, by local rank)
  std::string precision = "f32";  // activations and compute weights: f32 | bf16 | f16 (cuda)
  float loss_scale = 65536.0f;     // f16: initial dynamic loss scale
  int64_t loss_scale_window = 2000;  // f16: clean steps before the scale doubles
  std::string out_dir;        // checkpoints and metrics.jsonl; empty: none
  bool resume = false;        // continue from the latest complete checkpoint in out_dir
  std::string init_from;      // fine-tuning: start from this checkpoint's weights only
  int64_t exit_after = 0;     // stop (with a checkpoint) after N steps of this invocation; 0 = off
  std::string train_data;     // shard file, or a directory of *.h5 shards
  std::string val_data;       // same; empty: no validation
  void validate(const ModelConfig& model) const;
};

// The process layout and how gradients move (docs/config.md [parallel]).
struct ParallelConfig {
  int tp = 1, dp = 0, pp = 1, ep = 1;  // dp 0: world size / (tp * pp)
  int zero = 0;                        // ZeRO stage: 0 replicated, 1 sharded moments, 2 + sharded grads
  bool sequence_parallel = false;      // norms and residuals split over tp by token rows
  double bucket_mb = 25.0;             // gradient all-reduce bucket size
  double timeout_s = 300.0;            // a collective waiting longer is an error
  void validate() const;
};

}  // namespace castor
