// Adapters, masks, the attention rule and the contrastive / reconstruction heads. Small
// per-item loops run serially in item order (bitwise deterministic); the matrix work is
// one GEMM per modality.
#include "core/multimodal.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/objectives.h"

namespace castor {

namespace kc = kernels::cpu;

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void axpy_row(float* y, const float* x, int64_t C, float a = 1.0f) {
  for (int64_t c = 0; c < C; ++c) y[c] += a * x[c];
}

// One media kind's rows: positions and source rows of the masked / unmasked items.
struct MediaRows {
  int64_t n = 0;
  const float* data = nullptr;  // (n, dim)
  const int32_t* pos = nullptr;
};

}  // namespace

bool media_masked(uint64_t seed, int64_t sample, int64_t t, float ratio) {
  const uint64_t h = splitmix64(seed ^ (uint64_t(sample) * 0x9E3779B97F4A7C15ull) ^ (uint64_t(t) * 0xBF58476D1CE4E5B9ull));
  return float(h >> 40) * (1.0f / 16777216.0f) < ratio;
}

void attention_key_begin(const ModelInput& in, int32_t* key_begin) {
  const int64_t N = in.rows();
  std::fill(key_begin, key_begin + N, 0);
  if (in.modality == nullptr) return;
  for (int64_t n = 0; n < N; ++n) {
    const auto m = Modality(in.modality[n]);
    if (m == Modality::image || m == Modality::audio) key_begin[n] = in.segment_begin[n];
  }
  for (const MediaPair& p : in.pairs)
    for (int32_t t = p.text_begin; t < p.text_end; ++t) key_begin[p.row * in.T + t] = p.text_begin;
}

// ---------------------------------------------------------------------------------------
MediaAdapters::MediaAdapters(ParamStore& store, const ModelConfig& cfg, const std::string& prefix)
    : C_(cfg.d_model), pd_(cfg.patch_dim()), fd_(cfg.frame_dim()), grid_(cfg.image_grid_size()) {
  const float std = cfg.init_std;
  if (cfg.image_patch > 0) {
    const std::string p = prefix + ".image_adapter";
    img_w_ = store.add(p + ".proj.weight", {C_, pd_}, Init::normal(std), true);
    img_b_ = store.add(p + ".proj.bias", {C_}, Init::zeros(), false);
    row_ = store.add(p + ".row_embed", {grid_, C_}, Init::normal(std), true);
    col_ = store.add(p + ".col_embed", {grid_, C_}, Init::normal(std), true);
    img_mask_ = store.add(p + ".mask_embed", {C_}, Init::normal(std), true);
  }
  if (cfg.audio_stack > 0) {
    const std::string p = prefix + ".audio_adapter";
    aud_w_ = store.add(p + ".proj.weight", {C_, fd_}, Init::normal(std), true);
    aud_b_ = store.add(p + ".proj.bias", {C_}, Init::zeros(), false);
    aud_mask_ = store.add(p + ".mask_embed", {C_}, Init::normal(std), true);
  }
  modality_ = store.add(prefix + ".modality_embed.weight", {4, C_}, Init::normal(std), true);
}

void MediaAdapters::forward(const ModelInput& in, const uint8_t* masked, const float* wpe, float* emb) const {
  const int64_t C = C_, T = in.T;
  std::vector<float> y;
  // A kind without an adapter (e.g. a distillation teacher's) keeps its token embedding.
  auto project = [&](const Param* w, const Param* b, const Param* mask, int64_t n, int64_t dim, const float* x,
                     const int32_t* pos, auto&& extra) {
    if (n == 0 || w == nullptr) return;
    y.resize(size_t(n * C));
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, n, C, dim, 1.0f, x, dim, w->w, dim, 0.0f, y.data(), C));
    for (int64_t i = 0; i < n; ++i) {
      float* e = emb + int64_t(pos[i]) * C;
      const bool m = masked && masked[pos[i]];
      for (int64_t c = 0; c < C; ++c) e[c] = m ? mask->w[c] : y[size_t(i * C + c)] + b->w[c];
      if (wpe) axpy_row(e, wpe + (pos[i] % T) * C, C);
      extra(i, e);
    }
  };
  project(img_w_, img_b_, img_mask_, in.n_patches, pd_, in.patches, in.patch_pos, [&](int64_t i, float* e) {
    const int32_t r = in.patch_grid[2 * i], c = in.patch_grid[2 * i + 1];
    CASTOR_CHECK(r >= 0 && c >= 0 && r < grid_ && c < grid_, "image patch grid position (", r, ", ", c,
                 ") exceeds --model.image_grid ", grid_);
    axpy_row(e, row_->w + r * C, C);
    axpy_row(e, col_->w + c * C, C);
  });
  project(aud_w_, aud_b_, aud_mask_, in.n_frames, fd_, in.frames, in.frame_pos, [](int64_t, float*) {});
  for (int64_t n = 0; n < in.rows(); ++n)
    axpy_row(emb + n * C, modality_->w + (in.modality ? in.modality[n] : 0) * C, C);
}

void MediaAdapters::backward(const ModelInput& in, const uint8_t* masked, float* dwpe, float* demb) const {
  const int64_t C = C_, T = in.T;
  for (int64_t n = 0; n < in.rows(); ++n)
    axpy_row(modality_->g + (in.modality ? in.modality[n] : 0) * C, demb + n * C, C);
  std::vector<float> dy;
  auto project = [&](Param* w, Param* b, Param* mask, int64_t n, int64_t dim, const float* x, const int32_t* pos,
                     auto&& extra) {
    if (n == 0 || w == nullptr) return;
    dy.assign(size_t(n * C), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float* d = demb + int64_t(pos[i]) * C;
      if (dwpe) axpy_row(dwpe + (pos[i] % T) * C, d, C);
      extra(i, d);
      if (masked && masked[pos[i]]) {
        axpy_row(mask->g, d, C);
      } else {
        axpy_row(b->g, d, C);
        std::copy(d, d + C, dy.begin() + i * C);
      }
    }
    CASTOR_KERNEL_CHECK(kc::gemm(true, false, C, dim, n, 1.0f, dy.data(), C, x, dim, 1.0f, w->g, dim));
    for (int64_t i = 0; i < n; ++i) std::fill(demb + int64_t(pos[i]) * C, demb + int64_t(pos[i] + 1) * C, 0.0f);
  };
  project(img_w_, img_b_, img_mask_, in.n_patches, pd_, in.patches, in.patch_pos, [&](int64_t i, const float* d) {
    axpy_row(row_->g + in.patch_grid[2 * i] * C, d, C);
    axpy_row(col_->g + in.patch_grid[2 * i + 1] * C, d, C);
  });
  project(aud_w_, aud_b_, aud_mask_, in.n_frames, fd_, in.frames, in.frame_pos, [](int64_t, const float*) {});
}

// ---------------------------------------------------------------------------------------
MultimodalHeads::MultimodalHeads(ParamStore& store, const ModelConfig& cfg)
    : C_(cfg.d_model), pd_(cfg.patch_dim()), fd_(cfg.frame_dim()) {
  const float std = cfg.init_std;
  if (cfg.image_patch > 0) con_img_ = store.add("heads.contrastive.image.weight", {C_, C_}, Init::normal(std), true);
  if (cfg.audio_stack > 0) con_aud_ = store.add("heads.contrastive.audio.weight", {C_, C_}, Init::normal(std), true);
  con_txt_ = store.add("heads.contrastive.text.weight", {C_, C_}, Init::normal(std), true);
  if (cfg.image_patch > 0) {
    rec_img_w_ = store.add("heads.reconstruct.image.weight", {pd_, C_}, Init::normal(std), true);
    rec_img_b_ = store.add("heads.reconstruct.image.bias", {pd_}, Init::zeros(), false);
  }
  if (cfg.audio_stack > 0) {
    rec_aud_w_ = store.add("heads.reconstruct.audio.weight", {fd_, C_}, Init::normal(std), true);
    rec_aud_b_ = store.add("heads.reconstruct.audio.bias", {fd_}, Init::zeros(), false);
  }
}

void MultimodalHeads::embed_pairs(const ModelInput& in, const float* h, std::vector<float>& media,
                                  std::vector<float>& text) {
  const int64_t P = int64_t(in.pairs.size()), C = C_;
  begin_.resize(size_t(2 * P));
  end_.resize(size_t(2 * P));
  for (int64_t i = 0; i < P; ++i) {  // media ranges, then text ranges, as flat rows
    const MediaPair& p = in.pairs[size_t(i)];
    begin_[size_t(i)] = int32_t(p.row * in.T + p.media_begin);
    end_[size_t(i)] = int32_t(p.row * in.T + p.media_end);
    begin_[size_t(P + i)] = int32_t(p.row * in.T + p.text_begin);
    end_[size_t(P + i)] = int32_t(p.row * in.T + p.text_end);
  }
  pooled_m_.resize(size_t(2 * P * C));
  CASTOR_KERNEL_CHECK(kc::segment_mean(pooled_m_.data(), h, in.rows(), C, begin_.data(), end_.data(), 2 * P));
  media.resize(size_t(P * C));
  text.resize(size_t(P * C));
  for (int64_t i = 0; i < P; ++i) {
    const Param* w = in.pairs[size_t(i)].media == Modality::image ? con_img_ : con_aud_;
    CASTOR_CHECK(w, "a batch pair has a media kind the model has no adapter for");
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, 1, C, C, 1.0f, pooled_m_.data() + i * C, C, w->w, C, 0.0f,
                                 media.data() + i * C, C));
  }
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, P, C, C, 1.0f, pooled_m_.data() + P * C, C, con_txt_->w, C, 0.0f,
                               text.data(), C));
}

HeadResult MultimodalHeads::contrastive(const ModelInput& in, const float* h, float temperature, float grad_scale,
                                        float* dh) {
  HeadResult r;
  const int64_t P = int64_t(in.pairs.size()), C = C_;
  if (P < 2) return r;
  embed_pairs(in, h, a_, b_);
  scratch_.resize(kc::info_nce_scratch_floats(P, C));
  da_.resize(size_t(P * C));
  db_.resize(size_t(P * C));
  int64_t correct = 0;
  CASTOR_KERNEL_CHECK(kc::info_nce(a_.data(), b_.data(), P, C, temperature, &r.loss, &correct, nullptr, grad_scale,
                                   dh ? da_.data() : nullptr, dh ? db_.data() : nullptr, scratch_.data(),
                                   scratch_.size()));
  r.items = P;
  r.correct = correct;
  if (!dh) return r;
  // a_i = W_mod m_i, b_i = W_txt t_i: dW += da m^T, dm = W^T da (rows: da W).
  dpool_.assign(size_t(2 * P * C), 0.0f);
  for (int64_t i = 0; i < P; ++i) {
    Param* w = in.pairs[size_t(i)].media == Modality::image ? con_img_ : con_aud_;
    CASTOR_KERNEL_CHECK(kc::gemm(true, false, C, C, 1, 1.0f, da_.data() + i * C, C, pooled_m_.data() + i * C, C,
                                 1.0f, w->g, C));
    CASTOR_KERNEL_CHECK(kc::gemm(false, false, 1, C, C, 1.0f, da_.data() + i * C, C, w->w, C, 0.0f,
                                 dpool_.data() + i * C, C));
  }
  CASTOR_KERNEL_CHECK(kc::gemm(true, false, C, C, P, 1.0f, db_.data(), C, pooled_m_.data() + P * C, C, 1.0f,
                               con_txt_->g, C));
  CASTOR_KERNEL_CHECK(kc::gemm(false, false, P, C, C, 1.0f, db_.data(), C, con_txt_->w, C, 0.0f,
                               dpool_.data() + P * C, C));
  CASTOR_KERNEL_CHECK(kc::segment_mean_backward(dh, dpool_.data(), in.rows(), C, begin_.data(), end_.data(), 2 * P));
  return r;
}

HeadResult MultimodalHeads::reconstruction(const ModelInput& in, const uint8_t* masked, const float* h,
                                           float grad_scale, float* dh) {
  HeadResult r;
  if (masked == nullptr) return r;
  const int64_t C = C_;
  struct Kind {
    Param *w, *b;
    int64_t n, dim;
    const float* data;
    const int32_t* pos;
  } kinds[] = {{rec_img_w_, rec_img_b_, in.n_patches, pd_, in.patches, in.patch_pos},
               {rec_aud_w_, rec_aud_b_, in.n_frames, fd_, in.frames, in.frame_pos}};
  int64_t total = 0;
  for (const Kind& k : kinds)
    for (int64_t i = 0; i < k.n; ++i) total += masked[k.pos[i]] != 0;
  if (total == 0) return r;
  const float scale = grad_scale / float(total);
  std::vector<float> hx, target, pred, dpred, dhx;
  for (const Kind& k : kinds) {
    std::vector<int64_t> items;
    for (int64_t i = 0; i < k.n; ++i)
      if (masked[k.pos[i]]) items.push_back(i);
    const int64_t n = int64_t(items.size());
    if (n == 0) continue;
    hx.resize(size_t(n * C));
    target.resize(size_t(n * k.dim));
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = items[size_t(j)];
      std::copy(h + int64_t(k.pos[i]) * C, h + int64_t(k.pos[i] + 1) * C, hx.begin() + j * C);
      std::copy(k.data + i * k.dim, k.data + (i + 1) * k.dim, target.begin() + j * k.dim);
    }
    pred.resize(size_t(n * k.dim));
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, n, k.dim, C, 1.0f, hx.data(), C, k.w->w, C, 0.0f, pred.data(), k.dim));
    for (int64_t j = 0; j < n; ++j) axpy_row(pred.data() + j * k.dim, k.b->w, k.dim);
    double sum = 0.0;
    dpred.resize(size_t(n * k.dim));
    CASTOR_KERNEL_CHECK(kc::mse_rows(pred.data(), target.data(), n, k.dim, &sum, scale, dh ? dpred.data() : nullptr));
    r.loss += sum;
    if (!dh) continue;
    CASTOR_KERNEL_CHECK(kc::gemm(true, false, k.dim, C, n, 1.0f, dpred.data(), k.dim, hx.data(), C, 1.0f, k.w->g, C));
    for (int64_t j = 0; j < n; ++j) axpy_row(k.b->g, dpred.data() + j * k.dim, k.dim);
    dhx.resize(size_t(n * C));
    CASTOR_KERNEL_CHECK(kc::gemm(false, false, n, C, k.dim, 1.0f, dpred.data(), k.dim, k.w->w, C, 0.0f, dhx.data(), C));
    for (int64_t j = 0; j < n; ++j) axpy_row(dh + int64_t(k.pos[items[size_t(j)]]) * C, dhx.data() + j * C, C);
  }
  r.loss /= double(total);
  r.items = total;
  return r;
}

}  // namespace castor
