// Transformer: the decoder-only model (GPT-2 or Llama family by config), dense or with MoE
// feed-forward layers, text-only or multimodal (docs/model.md). A micro-batch goes
// embeddings (+ image/audio adapters) -> blocks -> final norm -> heads: the LM head fused
// with cross-entropy (lm and align terms), distillation from a teacher, contrastive and
// reconstruction heads. Heads produce their gradients during forward, so a training step
// is forward(input, losses, &scale) then backward(); evaluation passes no scale.
// Generation runs one sequence with a KV cache: prefill(prompt) then decode(new tokens).
// A LayerBuilder splits the model over tensor-parallel ranks (core/nn/layer_builder.h): the
// vocabulary tables by rows, attention by heads, MLPs by d_ff; the code here reads the same
// for any split. Generation and distillation need the whole model (tp = 1).
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/model_input.h"
#include "core/multimodal.h"
#include "core/nn/block.h"
#include "core/param.h"
#include "kernels/cpu/lm_head_xent.h"

namespace castor {

enum class LossTerm { lm, align, contrastive, reconstruction, balance, router_z, distill };
inline constexpr int kLossTerms = 7;
const char* loss_term_name(LossTerm t);
float loss_term_weight(const LossConfig& c, LossTerm t);

// The loss terms of one micro-batch: each a mean over its own items (docs/model.md).
struct LossValues {
  std::array<double, kLossTerms> value{};
  std::array<int64_t, kLossTerms> items{};  // 0: the term is absent from this micro-batch
  double total = 0.0;                       // sum of weight * value
  int64_t pairs_correct = 0;                // contrastive pairs whose media retrieves its own text
  double& operator[](LossTerm t) { return value[size_t(t)]; }
  double operator[](LossTerm t) const { return value[size_t(t)]; }
  int64_t count(LossTerm t) const { return items[size_t(t)]; }
};

using KvCache = nn::KvCache;  // core/nn/module.h

class Transformer {
 public:
  // Registers every parameter in `store` (allocation and init are the caller's:
  // store.allocate(backend); store.initialize(seed)).
  Transformer(const ModelConfig& cfg, ParamStore& store, Backend& backend, int64_t max_B, int64_t max_T,
              nn::LayerBuilder& layers = nn::single_device());
  ~Transformer();

  // The loss terms of `losses` on a micro-batch. With train_scale set, parameter gradients
  // of d(scale * sum_t weight_t * term_t) are accumulated: the heads' now, the rest by the
  // backward() that must follow before the next forward. seed: reconstruction masks.
  LossValues forward(const ModelInput& in, const LossConfig& losses, const float* train_scale, uint64_t seed = 0);
  // Text-only convenience: the summed next-token loss over targets >= 0; gradients of
  // *grad_scale * that sum.
  kernels::cpu::XentResult forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T,
                                   const float* grad_scale);
  // grads_ready(offset), when given, is called as backward goes: every gradient at arena
  // offset >= offset is final (data parallelism starts reducing those buckets while the
  // rest of backward runs). Arena order is registration order: embeddings and adapters,
  // blocks, final norm, heads; backward finishes it from the end. (Expert params placed
  // after all others, ParamStore::allocate, are final only when backward returns.)
  void backward(const std::function<void(size_t)>& grads_ready = nullptr);

  // Distillation teacher (forward only; same vocabulary), or nullptr.
  void set_teacher(Transformer* teacher);
  // Final hidden states (B*T, C) of a forward without losses (valid until the next call).
  const float* hidden(const ModelInput& in);
  // Next-token logits (V floats) at the last position of each of the B rows.
  void last_logits(const int32_t* ids, int64_t B, int64_t T, float* logits);
  void last_logits(const ModelInput& in, float* logits);
  // Projected contrastive embeddings of the batch's pairs (n_pairs x d_model each).
  void pair_embeddings(const ModelInput& in, std::vector<float>& media, std::vector<float>& text);
  // Projected contrastive embeddings of the pairs of the input of the last forward() or
  // hidden(), from the hidden states that pass left (no new pass; that input's arrays must
  // still be alive).
  void last_pair_embeddings(std::vector<float>& media, std::vector<float>& text);

  // Generation with a KV cache, one sequence at a time (docs/generate.md).
  // start_generation sizes `cache` for this model: max_positions() positions per layer,
  // length 0. prefill runs a prompt (B = 1; text, image patches and audio frames as in
  // forward, with the attention rule of docs/model.md), restarting the cache: it stores
  // every layer's post-RoPE keys and values and writes the next-token logits at the
  // prompt's last position (V floats). decode runs n text tokens at positions
  // cache.length .. cache.length + n - 1 (GPT-2: wpe at those positions; Llama: RoPE),
  // each attending to every cached position and causally to the new ones, appends them and
  // writes n x V logits (row i: the next token after ids[i]). Both match last_logits over
  // the whole sequence up to float rounding, except that with moe_capacity > 0 the tokens
  // an expert drops depend on the rows of a pass (dropless MoE matches).
  void start_generation(KvCache& cache) const;
  void prefill(const ModelInput& prompt, KvCache& cache, float* last_logits);
  void decode(const int32_t* ids, int64_t n, KvCache& cache, float* logits);
  // Longest sequence the buffers (and so a KV cache) hold: the constructor's max_T.
  int64_t max_positions() const { return max_T_; }

  // Router statistics of each MoE layer from the last forward.
  std::vector<const nn::MoeStats*> moe_stats() const;

  const ModelConfig& config() const { return cfg_; }
  const Param& head() const { return *head_; }
  // Rows per chunk of the fused LM head for a batch of `rows` rows (bench/NOTES.md).
  static int64_t head_chunk_rows(int64_t rows, int64_t vocab_size);

 private:
  Tensor trunk_forward(const ModelInput& in, const uint8_t* masked, float balance_scale, float z_scale,
                       KvCache* cache = nullptr);
  void check_cache(const KvCache& cache) const;
  void check_whole(const char* what) const;
  double distill(const ModelInput& in, float temperature, float grad_scale, bool train, int64_t* count);
  ModelConfig cfg_;
  nn::LayerBuilder& layers_;
  int64_t max_B_, max_T_;
  Param* wte_ = nullptr;
  Param* wpe_ = nullptr;
  Param* head_ = nullptr;  // == wte_ when tied
  std::unique_ptr<MediaAdapters> adapters_;
  std::unique_ptr<MultimodalHeads> heads_;
  std::vector<std::unique_ptr<nn::Block>> blocks_;
  // Where backward's gradients become final: the params of each block, and those from the
  // final norm on (index ranges in the store; their arena offsets are known once it is
  // allocated, and params reduced apart may sit in later arena regions).
  size_t lowest_offset(size_t first, size_t last) const;
  const ParamStore& store_;
  Ops& ops_;
  std::vector<std::pair<size_t, size_t>> block_params_;
  size_t tail_first_ = 0;
  std::unique_ptr<nn::Module> norm_f_;
  // Regions (identity on one device): partial vocabulary embeddings summed, rows split for
  // the blocks, rows gathered for the heads; heads_rows_ takes this rank's rows of the
  // replicated heads' gradient.
  std::unique_ptr<nn::Module> emb_reduce_, emb_scatter_, head_enter_, heads_rows_;
  std::unique_ptr<nn::VocabHead> vocab_head_;
  Buffer emb_, dhidden_, dheads_;
  int64_t head_chunk_ = 0;
  std::vector<int32_t> key_begin_;
  std::vector<uint8_t> masked_;
  std::vector<float> row_scale_;
  std::vector<double> row_losses_;
  std::vector<float> kd_scratch_;
  const float* norm_out_ = nullptr;
  Transformer* teacher_ = nullptr;
  ModelInput in_;
  ModelInput trunk_in_;  // input of the last trunk pass (last_pair_embeddings)
  const uint8_t* masked_in_ = nullptr;
  nn::Pass pass_;
  bool pending_backward_ = false;
};

}  // namespace castor
