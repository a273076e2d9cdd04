// Validation of the typed configs: every rejection names the option as the user typed it.
#include "core/config.h"

#include <cmath>
#include <utility>

#include "core/error.h"

namespace castor {

Family parse_family(const std::string& s) {
  if (s == "gpt2") return Family::kGpt2;
  if (s == "llama") return Family::kLlama;
  CASTOR_FAIL("--model.family: unknown family '", s, "' (expected gpt2 or llama)");
}

std::string family_name(Family f) { return f == Family::kGpt2 ? "gpt2" : "llama"; }

int64_t ModelConfig::ffn_dim() const {
  if (d_ff > 0) return d_ff;
  if (family == Family::kGpt2) return 4 * d_model;
  int64_t f = (8 * d_model / 3 + 63) / 64 * 64;
  return f;
}

void ModelConfig::validate() const {
  CASTOR_CHECK(vocab_size > 0, "--model.vocab_size must be positive (got ", vocab_size, ")");
  CASTOR_CHECK(d_model > 0, "--model.d_model must be positive (got ", d_model, ")");
  CASTOR_CHECK(n_layers > 0, "--model.n_layers must be positive (got ", n_layers, ")");
  CASTOR_CHECK(n_heads > 0, "--model.n_heads must be positive (got ", n_heads, ")");
  CASTOR_CHECK(d_model % n_heads == 0, "--model.n_heads (", n_heads, ") must divide --model.d_model (",
               d_model, ")");
  CASTOR_CHECK(n_kv_heads >= 0, "--model.n_kv_heads must be >= 0 (got ", n_kv_heads, ")");
  CASTOR_CHECK(n_heads % kv_heads() == 0, "--model.n_kv_heads (", kv_heads(),
               ") must divide --model.n_heads (", n_heads, ")");
  CASTOR_CHECK(family == Family::kGpt2 || head_dim() % 2 == 0,
               "RoPE needs an even head dimension (d_model / n_heads = ", head_dim(), ")");
  CASTOR_CHECK(d_ff >= 0, "--model.d_ff must be >= 0 (got ", d_ff, ")");
  CASTOR_CHECK(max_seq_len > 0, "--model.max_seq_len must be positive (got ", max_seq_len, ")");
  CASTOR_CHECK(norm_eps > 0 && std::isfinite(norm_eps), "--model.norm_eps must be positive (got ", norm_eps, ")");
  CASTOR_CHECK(rope_theta > 0 && std::isfinite(rope_theta), "--model.rope_theta must be positive (got ", rope_theta, ")");
  CASTOR_CHECK(init_std > 0 && std::isfinite(init_std), "--model.init_std must be positive (got ", init_std, ")");
  CASTOR_CHECK(moe_experts >= 0, "--model.moe_experts must be >= 0 (got ", moe_experts, ")");
  if (moe_experts > 0) {
    CASTOR_CHECK(moe_top_k >= 1 && moe_top_k <= moe_experts, "--model.moe_top_k (", moe_top_k,
                 ") must be between 1 and --model.moe_experts (", moe_experts, ")");
    CASTOR_CHECK(moe_every >= 1 && moe_every <= n_layers, "--model.moe_every (", moe_every,
                 ") must be between 1 and --model.n_layers (", n_layers, ")");
    CASTOR_CHECK(moe_d_ff >= 0, "--model.moe_d_ff must be >= 0 (got ", moe_d_ff, ")");
    CASTOR_CHECK(std::isfinite(moe_capacity) && moe_capacity >= 0, "--model.moe_capacity (", moe_capacity,
                 ") must be > 0 (a capacity factor) or 0 (dropless)");
  }
  CASTOR_CHECK(image_patch >= 0, "--model.image_patch must be >= 0 (got ", image_patch, ")");
  CASTOR_CHECK(image_channels == 1 || image_channels == 3, "--model.image_channels must be 1 or 3 (got ",
               image_channels, ")");
  CASTOR_CHECK(image_grid >= 0, "--model.image_grid must be >= 0 (got ", image_grid, ")");
  CASTOR_CHECK(audio_stack >= 0, "--model.audio_stack must be >= 0 (got ", audio_stack, ")");
  CASTOR_CHECK(n_mels >= 0, "--model.n_mels must be >= 0 (got ", n_mels, ")");
  CASTOR_CHECK(audio_stack == 0 || n_mels > 0, "--model.audio_stack needs --model.n_mels (the data's log-mel bands)");
}

int64_t ModelConfig::moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < n_layers; ++l) n += is_moe_layer(l);
  return n;
}

void LossConfig::validate() const {
  const std::pair<const char*, float> weights[] = {{"lm", lm},         {"align", align},
                                                   {"contrastive", contrastive},
                                                   {"reconstruction", reconstruction},
                                                   {"balance", balance}, {"router_z", router_z},
                                                   {"distill", distill}};
  for (const auto& [name, w] : weights)
    CASTOR_CHECK(std::isfinite(w) && w >= 0, "--loss.", name, " must be >= 0 (got ", w, ")");
  CASTOR_CHECK(std::isfinite(temperature) && temperature > 0, "--loss.temperature must be positive (got ",
               temperature, ")");
  CASTOR_CHECK(mask_ratio >= 0 && mask_ratio < 1, "--loss.mask_ratio must be in [0, 1) (got ", mask_ratio, ")");
  CASTOR_CHECK(std::isfinite(distill_temperature) && distill_temperature > 0,
               "--loss.distill_temperature must be positive (got ", distill_temperature, ")");
  CASTOR_CHECK(distill == 0 || !teacher.empty(), "--loss.distill needs --loss.teacher (a checkpoint)");
}

int64_t ModelConfig::non_embedding_params() const {
  int64_t C = d_model, hd = head_dim();
  int64_t qkv = C * (n_heads + 2 * kv_heads()) * hd;
  int64_t attn_out = C * C;
  const bool gpt2 = family == Family::kGpt2;
  auto ffn = [&](int64_t F) { return gpt2 ? 2 * C * F + F + C : 3 * C * F; };
  int64_t total = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    int64_t per_layer = gpt2 ? qkv + (n_heads + 2 * kv_heads()) * hd + attn_out + C + 4 * C : qkv + attn_out + 2 * C;
    if (is_moe_layer(l)) {
      per_layer += moe_experts * C + (moe_top_k + (moe_shared_expert ? 1 : 0)) * ffn(expert_ffn_dim());
    } else {
      per_layer += ffn(ffn_dim());
    }
    total += per_layer;
  }
  return total + (gpt2 ? 2 * C : C);
}

void OptimConfig::validate() const {
  CASTOR_CHECK(std::isfinite(lr) && lr > 0, "--optim.lr must be positive (got ", lr, ")");
  CASTOR_CHECK(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr,
               "--optim.min_lr must be in [0, --optim.lr] (got ", min_lr, ")");
  CASTOR_CHECK(warmup_steps >= 0, "--optim.warmup_steps must be >= 0 (got ", warmup_steps, ")");
  CASTOR_CHECK(std::isfinite(weight_decay) && weight_decay >= 0,
               "--optim.weight_decay must be >= 0 (got ", weight_decay, ")");
  CASTOR_CHECK(beta1 >= 0 && beta1 < 1, "--optim.beta1 must be in [0, 1) (got ", beta1, ")");
  CASTOR_CHECK(beta2 >= 0 && beta2 < 1, "--optim.beta2 must be in [0, 1) (got ", beta2, ")");
  CASTOR_CHECK(eps > 0 && std::isfinite(eps), "--optim.eps must be positive (got ", eps, ")");
  CASTOR_CHECK(grad_clip >= 0 && std::isfinite(grad_clip), "--optim.grad_clip must be >= 0 (got ", grad_clip, ")");
}

void TrainConfig::validate(const ModelConfig& model) const {
  CASTOR_CHECK(steps > 0, "--train.steps must be positive (got ", steps, ")");
  CASTOR_CHECK(micro_batch > 0, "--train.micro_batch must be positive (got ", micro_batch, ")");
  CASTOR_CHECK(seq_len > 0, "--train.seq_len must be positive (got ", seq_len, ")");
  CASTOR_CHECK(seq_len <= model.max_seq_len, "--train.seq_len (", seq_len,
               ") exceeds --model.max_seq_len (", model.max_seq_len, ")");
  CASTOR_CHECK(grad_accum > 0, "--train.grad_accum must be positive (got ", grad_accum, ")");
  CASTOR_CHECK(log_every > 0, "--train.log_every must be positive (got ", log_every, ")");
  CASTOR_CHECK(eval_every >= 0, "--train.eval_every must be >= 0 (got ", eval_every, ")");
  CASTOR_CHECK(eval_batches > 0, "--train.eval_batches must be positive (got ", eval_batches, ")");
  CASTOR_CHECK(ckpt_every >= 0, "--train.ckpt_every must be >= 0 (got ", ckpt_every, ")");
  CASTOR_CHECK(threads >= 0, "--train.threads must be >= 0 (got ", threads, ")");
  CASTOR_CHECK(device == "cpu" || device == "cuda", "--train.device ", device, ": expected cpu or cuda");
  CASTOR_CHECK(precision == "f32" || precision == "bf16" || precision == "f16", "--train.precision ", precision,
               ": expected f32, bf16 or f16");
  CASTOR_CHECK(precision == "f32" || device == "cuda", "--train.precision ", precision, " needs --train.device cuda "
               "(the cpu backend computes in f32)");
  CASTOR_CHECK(loss_scale >= 1.0f && loss_scale <= 16777216.0f, "--train.loss_scale ", loss_scale,
               ": expected a value in [1, 2^24]");
  CASTOR_CHECK(loss_scale_window > 0, "--train.loss_scale_window must be positive (got ", loss_scale_window, ")");
  CASTOR_CHECK(!train_data.empty(), "--data.train is required (a shard file or a directory of shards)");
  CASTOR_CHECK(!resume || !out_dir.empty(), "--train.resume needs --train.out_dir");
  CASTOR_CHECK(!resume || init_from.empty(), "--train.resume and --train.init_from exclude each other (resume "
               "continues a run; init_from starts a new stage from a checkpoint's weights)");
  CASTOR_CHECK(exit_after >= 0, "--train.exit_after must be >= 0 (got ", exit_after, ")");
  CASTOR_CHECK(exit_after == 0 || !out_dir.empty(), "--train.exit_after needs --train.out_dir");
}

void ParallelConfig::validate() const {
  CASTOR_CHECK(tp >= 1 && pp >= 1 && ep >= 1 && dp >= 0, "--parallel.tp, dp, pp and ep must be >= 1 (dp may be 0: ",
               "derived from the world size); got tp=", tp, " dp=", dp, " pp=", pp, " ep=", ep);
  CASTOR_CHECK(zero >= 0 && zero <= 2, "--parallel.zero ", zero, ": expected 0 (replicated), 1 (sharded optimizer "
               "states) or 2 (sharded gradients too)");
  CASTOR_CHECK(bucket_mb > 0, "--parallel.bucket_mb must be positive (got ", bucket_mb, ")");
  CASTOR_CHECK(timeout_s > 0, "--parallel.timeout must be positive (got ", timeout_s, ")");
}

}  // namespace castor
