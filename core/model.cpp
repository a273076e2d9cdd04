// Transformer assembly (Hugging Face names), the loss terms of docs/model.md, backward
// through blocks in reverse, and the forward-only paths of generation and evaluation.
#include "core/model.h"

#include <algorithm>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kv_attention.h"
#include "kernels/cpu/objectives.h"

namespace castor {

namespace kc = kernels::cpu;

const char* loss_term_name(LossTerm t) {
  static const char* names[kLossTerms] = {"lm",      "align",    "contrastive", "reconstruction",
                                          "balance", "router_z", "distill"};
  return names[size_t(t)];
}

float loss_term_weight(const LossConfig& c, LossTerm t) {
  const float w[kLossTerms] = {c.lm, c.align, c.contrastive, c.reconstruction, c.balance, c.router_z, c.distill};
  return w[size_t(t)];
}

Transformer::Transformer(const ModelConfig& cfg, ParamStore& store, Backend& backend, int64_t max_B, int64_t max_T,
                         nn::LayerBuilder& layers)
    : cfg_(cfg), layers_(layers), max_B_(max_B), max_T_(max_T), store_(store), ops_(backend.ops()) {
  cfg_.validate();
  CASTOR_CHECK(max_T <= cfg.max_seq_len, "sequence length ", max_T, " exceeds --model.max_seq_len (", cfg.max_seq_len,
               ")");
  const int64_t rows = max_B * max_T, C = cfg.d_model, V = cfg.vocab_size;
  const bool gpt2 = cfg.family == Family::kGpt2;
  wte_ = store.add(gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight", {V, C}, Init::normal(cfg.init_std),
                   true, layers.vocab_shard());
  if (gpt2) wpe_ = store.add("transformer.wpe.weight", {cfg.max_seq_len, C}, Init::normal(cfg.init_std), true);
  if (cfg.multimodal()) adapters_ = std::make_unique<MediaAdapters>(store, cfg, gpt2 ? "transformer" : "model");
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const size_t first = store.params().size();
    blocks_.push_back(std::make_unique<nn::Block>(store, backend, layers, cfg, l, max_B, max_T));
    block_params_.emplace_back(first, store.params().size());
  }
  tail_first_ = store.params().size();
  norm_f_ = layers.norm(store, backend, rows, C, cfg.family, gpt2 ? "transformer.ln_f" : "model.norm", cfg.norm_eps);
  if (cfg.multimodal()) heads_ = std::make_unique<MultimodalHeads>(store, cfg);
  head_ = cfg.tied_embeddings()
              ? wte_
              : store.add("lm_head.weight", {V, C}, Init::normal(cfg.init_std), true, layers.vocab_shard());
  emb_ = nn::act_buffer(backend, rows * C);
  dhidden_ = nn::act_buffer(backend, rows * C);
  if (heads_) dheads_ = Buffer(backend, size_t(rows * C) * sizeof(float));
  emb_reduce_ = layers.region(nn::Region::kReduce, backend, rows, C);
  emb_scatter_ = layers.region(nn::Region::kScatter, backend, rows, C);
  head_enter_ = layers.region(nn::Region::kEnter, backend, rows, C);
  heads_rows_ = layers.region(nn::Region::kScatter, backend, rows, C);
  head_chunk_ = head_chunk_rows(rows, V);
  vocab_head_ = layers.vocab_head(backend, head_chunk_, C, V);
  key_begin_.resize(size_t(rows));
  masked_.resize(size_t(rows));
  row_scale_.resize(size_t(rows));
  row_losses_.resize(size_t(rows));
}

Transformer::~Transformer() = default;

int64_t Transformer::head_chunk_rows(int64_t rows, int64_t vocab_size) {
  // 512 rows measured best (bench/NOTES.md); scratch capped at 32M floats (128 MB).
  return std::clamp<int64_t>((int64_t(32) << 20) / std::max<int64_t>(vocab_size, 1), 1, std::min<int64_t>(rows, 512));
}

void Transformer::set_teacher(Transformer* teacher) {
  if (teacher) check_whole("distillation");
  CASTOR_CHECK(teacher == nullptr || teacher->cfg_.vocab_size == cfg_.vocab_size, "distillation teacher vocabulary (",
               teacher ? teacher->cfg_.vocab_size : 0, ") differs from the model's (", cfg_.vocab_size, ")");
  CASTOR_CHECK(teacher == nullptr || (teacher->max_B_ >= max_B_ && teacher->max_T_ >= max_T_),
               "distillation teacher built for smaller batches than the model");
  teacher_ = teacher;
}

Tensor Transformer::trunk_forward(const ModelInput& in, const uint8_t* masked, float balance_scale, float z_scale,
                                  KvCache* cache) {
  CASTOR_CHECK(in.B <= max_B_ && in.T <= max_T_, "batch (", in.B, ", ", in.T, ") exceeds the model's buffers (", max_B_,
               ", ", max_T_, ")");
  const int64_t C = cfg_.d_model;
  const int64_t past = cache ? cache->length : 0;  // positions of this pass start here
  // After a prefill, cached passes carry text tokens only (they attend to every position).
  CASTOR_CHECK(past == 0 || (in.modality == nullptr && in.n_patches + in.n_frames == 0),
               "a pass after the prefill takes text tokens only");
  pass_ = {in.B, in.T};
  pass_.balance_scale = balance_scale;
  pass_.z_scale = z_scale;
  pass_.cache = cache;
  pass_.past = past;
  trunk_in_ = in;
  // Token embeddings of this rank's vocabulary rows (zeros for the others), summed over
  // ranks, then the (replicated) positions: one rounding, as in a single lookup.
  const int64_t v_begin = wte_->shard.rank * wte_->local[0];
  const bool ids_ok = ops_.embedding_forward(emb_.ref(), in.ids, wte_->cw(), {}, in.rows(), in.T, C,
                                              cfg_.vocab_size, v_begin, wte_->local[0]);
  CASTOR_CHECK(ids_ok, "token id outside the model vocabulary (", cfg_.vocab_size, ")");
  Tensor x = emb_reduce_->forward(pass_, emb_.rows(in.rows(), C));
  if (wpe_)
    for (int64_t b = 0; b < in.B; ++b)
      ops_.add(ref(x).at(b * in.T * C), ref(x).at(b * in.T * C), wpe_->cw().at(past * C), in.T * C);
  // Without adapters, media positions keep their token embedding (end-of-text): a text-only
  // teacher can distil on multimodal batches. Training refuses such shards up front.
  if (adapters_) adapters_->forward(in, masked, wpe_ ? wpe_->w : nullptr, x.f32());
  if (in.modality) {
    attention_key_begin(in, key_begin_.data());
    pass_.key_begin = key_begin_.data();
  }
  x = emb_scatter_->forward(pass_, x);
  for (auto& b : blocks_) x = b->forward(pass_, x);
  Tensor h = head_enter_->forward(pass_, norm_f_->forward(pass_, x));
  norm_out_ = h.f32();
  return h;
}

LossValues Transformer::forward(const ModelInput& in, const LossConfig& losses, const float* train_scale,
                                uint64_t seed) {
  in_ = in;
  const bool train = train_scale != nullptr;
  const float scale = train ? *train_scale : 0.0f;
  const int64_t N = in.rows(), C = cfg_.d_model;
  LossValues out;
  auto set = [&](LossTerm t, double value, int64_t items) {
    out.value[size_t(t)] = value;
    out.items[size_t(t)] = items;
  };

  // Reconstruction masks: drawn per (sample, position), so independent of the layout.
  masked_in_ = nullptr;
  if (adapters_ && losses.reconstruction > 0 && losses.mask_ratio > 0 && in.sample && in.n_patches + in.n_frames > 0) {
    std::fill(masked_.begin(), masked_.begin() + N, 0);
    auto draw = [&](int64_t n, const int32_t* pos) {
      for (int64_t i = 0; i < n; ++i)
        masked_[size_t(pos[i])] = media_masked(seed, in.sample[pos[i] / in.T], pos[i] % in.T, losses.mask_ratio);
    };
    draw(in.n_patches, in.patch_pos);
    draw(in.n_frames, in.frame_pos);
    masked_in_ = masked_.data();
  }
  const int64_t moe_layers = cfg_.moe_layers();
  const float layer_scale = moe_layers > 0 ? scale / float(moe_layers) : 0.0f;
  Tensor h = trunk_forward(in, masked_in_, losses.balance * layer_scale, losses.router_z * layer_scale);
  const Ref dh = train ? dhidden_.ref() : Ref{};

  // lm and align: one pass of the fused head with per-row weights.
  int64_t n_lm = 0, n_align = 0;
  if (in.targets) {
    for (int64_t n = 0; n < N; ++n) {
      if (in.targets[n] < 0) continue;
      (in.align && in.align[n] ? n_align : n_lm) += 1;
    }
    const float s_lm = n_lm ? losses.lm * scale / float(n_lm) : 0.0f;
    const float s_align = n_align ? losses.align * scale / float(n_align) : 0.0f;
    for (int64_t n = 0; n < N; ++n) row_scale_[size_t(n)] = in.align && in.align[n] ? s_align : s_lm;
    vocab_head_->xent(ref(h), head_->cw(), in.targets, N, dh, train ? head_->g : nullptr, row_scale_.data(),
                      row_losses_.data());
    double sum_lm = 0.0, sum_align = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      if (in.targets[n] < 0) continue;
      (in.align && in.align[n] ? sum_align : sum_lm) += row_losses_[size_t(n)];
    }
    if (n_lm) set(LossTerm::lm, sum_lm / double(n_lm), n_lm);
    if (n_align) set(LossTerm::align, sum_align / double(n_align), n_align);
  } else if (dh.p) {
    ops_.zero(dh, N * C);
  }
  if (teacher_ && losses.distill > 0 && in.targets && n_lm + n_align > 0) {
    int64_t count = 0;
    const double kd =
        distill(in, losses.distill_temperature, losses.distill * scale / float(n_lm + n_align), train, &count);
    set(LossTerm::distill, kd / double(count), count);
  }
  // The multimodal heads run on every row on every rank: their gradient is added after the
  // vocabulary part has been summed over ranks (backward).
  float* dheads = train && heads_ ? dheads_.f32() : nullptr;
  if (dheads) std::fill(dheads, dheads + N * C, 0.0f);
  if (heads_ && losses.contrastive > 0) {
    const HeadResult r = heads_->contrastive(in, h.f32(), losses.temperature, losses.contrastive * scale, dheads);
    if (r.items) set(LossTerm::contrastive, r.loss, r.items);
    out.pairs_correct = r.correct;
  }
  if (heads_ && masked_in_) {
    const HeadResult r = heads_->reconstruction(in, masked_in_, h.f32(), losses.reconstruction * scale, dheads);
    if (r.items) set(LossTerm::reconstruction, r.loss, r.items);
  }
  if (moe_layers > 0) {
    double balance = 0.0, z = 0.0;
    for (const nn::MoeStats* s : moe_stats()) {
      balance += s->balance;
      z += s->router_z;
    }
    set(LossTerm::balance, balance / double(moe_layers), moe_layers);
    set(LossTerm::router_z, z / double(moe_layers), moe_layers);
  }
  for (int t = 0; t < kLossTerms; ++t)
    if (out.items[size_t(t)] > 0) out.total += double(loss_term_weight(losses, LossTerm(t))) * out.value[size_t(t)];
  pending_backward_ = train;
  return out;
}

double Transformer::distill(const ModelInput& in, float temperature, float grad_scale, bool train, int64_t* count) {
  const int64_t N = in.rows(), C = cfg_.d_model, V = cfg_.vocab_size, tC = teacher_->cfg_.d_model;
  const float* h = norm_out_;  // this model's final hidden states (trunk_forward)
  const float* th = teacher_->hidden(in);
  const Param& tw = teacher_->head();
  const int64_t chunk = head_chunk_;
  kd_scratch_.resize(size_t(3 * chunk * V));
  float* s = kd_scratch_.data();
  float* t = s + chunk * V;
  float* ds = t + chunk * V;
  double loss = 0.0;
  *count = 0;
  for (int64_t c0 = 0; c0 < N; c0 += chunk) {
    const int64_t rows = std::min(chunk, N - c0);
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, rows, V, C, 1.0f, h + c0 * C, C, head_->w, C, 0.0f, s, V));
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, rows, V, tC, 1.0f, th + c0 * tC, tC, tw.w, tC, 0.0f, t, V));
    double sum = 0.0;
    int64_t n = 0;
    CASTOR_KERNEL_CHECK(
        kc::kl_distill(s, t, in.targets + c0, rows, V, temperature, &sum, &n, grad_scale, train ? ds : nullptr));
    loss += sum;
    *count += n;
    if (!train) continue;
    CASTOR_KERNEL_CHECK(kc::gemm(false, false, rows, C, V, 1.0f, ds, V, head_->w, C, 1.0f, dhidden_.f32() + c0 * C, C));
    CASTOR_KERNEL_CHECK(kc::gemm(true, false, V, C, rows, 1.0f, ds, V, h + c0 * C, C, 1.0f, head_->g, C));
  }
  return loss;
}

kc::XentResult Transformer::forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T,
                                    const float* grad_scale) {
  ModelInput in;
  in.B = B;
  in.T = T;
  in.ids = ids;
  in.targets = targets;
  int64_t count = 0;
  for (int64_t n = 0; n < B * T; ++n) count += targets[n] >= 0;
  LossConfig lm_only;
  lm_only.lm = 1.0f;
  const float scale = grad_scale ? *grad_scale * float(count) : 0.0f;
  forward(in, lm_only, grad_scale ? &scale : nullptr);
  kc::XentResult r;
  for (int64_t n = 0; n < B * T; ++n) r.loss_sum += targets[n] >= 0 ? row_losses_[size_t(n)] : 0.0;
  r.count = count;
  return r;
}

void Transformer::backward(const std::function<void(size_t)>& grads_ready) {
  CASTOR_CHECK(pending_backward_, "Transformer::backward without a training forward");
  pending_backward_ = false;
  auto ready = [&](size_t offset) {
    if (grads_ready) grads_ready(offset);
  };
  const int64_t C = cfg_.d_model;
  Tensor d = head_enter_->backward(pass_, dhidden_.rows(pass_.rows(), C));
  if (heads_) {
    Tensor mine = heads_rows_->forward(pass_, nn::rows_view(dheads_.f32(), pass_.rows(), C));
    ops_.add(ref(d), ref(d), ref(mine), d.numel());
  }
  d = norm_f_->backward(pass_, d);
  // Within each arena region params keep registration order, so once block l is done every
  // gradient from the lowest offset of its params (or of the tail's) on is final.
  ready(lowest_offset(tail_first_, store_.params().size()));  // final norm and heads (gradients came with forward)
  for (size_t l = blocks_.size(); l-- > 0;) {
    d = blocks_[l]->backward(pass_, d);
    ready(lowest_offset(block_params_[l].first, block_params_[l].second));
  }
  d = emb_reduce_->backward(pass_, emb_scatter_->backward(pass_, d));
  if (adapters_) adapters_->backward(in_, masked_in_, wpe_ ? wpe_->g : nullptr, d.f32());
  const int64_t v_begin = wte_->shard.rank * wte_->local[0];
  ops_.embedding_backward(wte_->g, wpe_ ? wpe_->g : nullptr, ref(d), in_.ids, pass_.rows(), pass_.T, C,
                          cfg_.vocab_size, v_begin, wte_->local[0]);
  ready(0);
}

size_t Transformer::lowest_offset(size_t first, size_t last) const {
  size_t low = SIZE_MAX;
  for (size_t i = first; i < last; ++i) low = std::min(low, store_.params()[i].offset);
  return low;
}

const float* Transformer::hidden(const ModelInput& in) {
  pending_backward_ = false;
  return trunk_forward(in, nullptr, 0.0f, 0.0f).f32();
}

void Transformer::check_whole(const char* what) const {
  CASTOR_CHECK(layers_.tp_size() == 1, what, " needs the whole model on one rank (tensor-parallel degree ",
               layers_.tp_size(), ")");
}

void Transformer::last_logits(const ModelInput& in, float* logits) {
  check_whole("last_logits");
  const float* h = hidden(in);
  const int64_t C = cfg_.d_model, V = cfg_.vocab_size, T = in.T;
  // Row (b, T-1) of each sequence: a strided view (lda = T*C) into the hidden states.
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, in.B, V, C, 1.0f, h + (T - 1) * C, T * C, head_->w, C, 0.0f, logits, V));
}

void Transformer::last_logits(const int32_t* ids, int64_t B, int64_t T, float* logits) {
  ModelInput in;
  in.B = B;
  in.T = T;
  in.ids = ids;
  last_logits(in, logits);
}

void Transformer::pair_embeddings(const ModelInput& in, std::vector<float>& media, std::vector<float>& text) {
  CASTOR_CHECK(heads_, "the model has no contrastive heads (no image or audio adapter)");
  heads_->embed_pairs(in, hidden(in), media, text);
}

void Transformer::last_pair_embeddings(std::vector<float>& media, std::vector<float>& text) {
  CASTOR_CHECK(heads_, "the model has no contrastive heads (no image or audio adapter)");
  CASTOR_CHECK(norm_out_ != nullptr && pass_.cache == nullptr, "last_pair_embeddings without a forward pass");
  heads_->embed_pairs(trunk_in_, norm_out_, media, text);
}

void Transformer::start_generation(KvCache& cache) const {
  cache.capacity = max_T_;
  cache.length = 0;
  cache.kv_dim = cfg_.kv_heads() * cfg_.head_dim();
  cache.k.assign(size_t(cfg_.n_layers), std::vector<float>(size_t(cache.capacity * cache.kv_dim)));
  cache.v.assign(size_t(cfg_.n_layers), std::vector<float>(size_t(cache.capacity * cache.kv_dim)));
}

void Transformer::check_cache(const KvCache& cache) const {
  const int64_t kvd = cfg_.kv_heads() * cfg_.head_dim();
  bool ok = int64_t(cache.k.size()) == cfg_.n_layers && int64_t(cache.v.size()) == cfg_.n_layers &&
            cache.kv_dim == kvd && cache.capacity <= max_T_ && cache.length >= 0 && cache.length <= cache.capacity;
  for (size_t l = 0; ok && l < cache.k.size(); ++l)
    ok = int64_t(cache.k[l].size()) >= cache.capacity * kvd && int64_t(cache.v[l].size()) >= cache.capacity * kvd;
  CASTOR_CHECK(ok, "KV cache not sized for this model (call start_generation)");
}

void Transformer::prefill(const ModelInput& prompt, KvCache& cache, float* last_logits) {
  check_whole("generation");
  check_cache(cache);
  CASTOR_CHECK(prompt.B == 1 && prompt.T >= 1, "prefill takes one sequence of at least one position (got ", prompt.B,
               " x ", prompt.T, ")");
  CASTOR_CHECK(prompt.T <= cache.capacity, "prompt of ", prompt.T, " positions exceeds the context of ",
               cache.capacity);
  pending_backward_ = false;
  cache.length = 0;
  const float* h = trunk_forward(prompt, nullptr, 0.0f, 0.0f, &cache).f32();
  cache.length = prompt.T;
  const int64_t C = cfg_.d_model;
  CASTOR_KERNEL_CHECK(kc::matvec(last_logits, head_->w, cfg_.vocab_size, C, C, h + (prompt.T - 1) * C));
}

void Transformer::decode(const int32_t* ids, int64_t n, KvCache& cache, float* logits) {
  check_cache(cache);
  CASTOR_CHECK(n >= 1 && cache.length + n <= cache.capacity, "decode: ", cache.length, " cached + ", n,
               " new positions exceed the context of ", cache.capacity);
  pending_backward_ = false;
  ModelInput in;
  in.B = 1;
  in.T = n;
  in.ids = ids;
  const float* h = trunk_forward(in, nullptr, 0.0f, 0.0f, &cache).f32();
  cache.length += n;
  const int64_t C = cfg_.d_model, V = cfg_.vocab_size;
  if (n == 1)  // one row: a matrix-vector product (a GEMM would repack the head every step)
    CASTOR_KERNEL_CHECK(kc::matvec(logits, head_->w, V, C, C, h));
  else
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, n, V, C, 1.0f, h, C, head_->w, C, 0.0f, logits, V));
}

std::vector<const nn::MoeStats*> Transformer::moe_stats() const {
  std::vector<const nn::MoeStats*> out;
  for (const auto& b : blocks_)
    if (b->moe()) out.push_back(&b->moe()->stats());
  return out;
}

}  // namespace castor
