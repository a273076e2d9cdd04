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

  int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
  int64_t head_dim() const { return d_model / n_heads; }
  int64_t ffn_dim() const;
  bool tied_embeddings() const { return family == Family::kGpt2; }
  void validate() const;
  // Parameters excluding token/position embeddings (for MFU), and in total.
  int64_t non_embedding_params() const;
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
  std::string out_dir;        // checkpoints and metrics.jsonl; empty: none
  bool resume = false;        // continue from the latest complete checkpoint in out_dir
  int64_t exit_after = 0;     // stop (with a checkpoint) after N steps of this invocation; 0 = off
  std::string train_data;     // shard file, or a directory of *.h5 shards
  std::string val_data;       // same; empty: no validation
  void validate(const ModelConfig& model) const;
};

// The process layout and how gradients move (docs/config.md [parallel]).
struct ParallelConfig {
  int tp = 1, dp = 0, pp = 1, ep = 1;  // dp 0: world size / (tp * pp)
  int zero = 0;                        // ZeRO stage: 0 replicated, 1 sharded moments, 2 + sharded grads
  double bucket_mb = 25.0;             // gradient all-reduce bucket size
  double timeout_s = 300.0;            // a collective waiting longer is an error
  void validate() const;
};

}  // namespace castor
