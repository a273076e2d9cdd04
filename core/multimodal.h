// The multimodal parts of the model around the trunk (docs/model.md): the attention rule
// for media and captions, reconstruction masks, the image/audio adapters with the modality
// table (input side), and the contrastive and reconstruction heads (output side). Heads,
// like the fused LM head, produce their gradients in forward: they accumulate parameter
// gradients and add (+=) into the gradient of the final hidden states.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/model_input.h"
#include "core/param.h"

namespace castor {

// Media position t of the row with global sample index `sample` is masked (docs/model.md).
bool media_masked(uint64_t seed, int64_t sample, int64_t t, float ratio);
// First key each position attends to (B*T values), by the rule of docs/model.md.
void attention_key_begin(const ModelInput& in, int32_t* key_begin);

class MediaAdapters {
 public:
  // prefix: "transformer" (gpt2) or "model" (llama).
  MediaAdapters(ParamStore& store, const ModelConfig& cfg, const std::string& prefix);
  // emb (B*T, C) holds wte[id] (+ wpe[t]) for every position: media rows become adapter
  // outputs (+ 2-D positions, + wpe[t] when wpe is given), and every row gets its modality
  // embedding. masked (B*T, optional): 1 where a media input is replaced by its mask embedding.
  void forward(const ModelInput& in, const uint8_t* masked, const float* wpe, float* emb) const;
  // demb: the gradient of emb. Accumulates the adapters' (and wpe's, for media rows) parameter
  // gradients, then zeroes the media rows of demb, so the token embedding sees text rows only.
  void backward(const ModelInput& in, const uint8_t* masked, float* dwpe, float* demb) const;

 private:
  int64_t C_, pd_, fd_, grid_;
  Param *img_w_ = nullptr, *img_b_ = nullptr, *row_ = nullptr, *col_ = nullptr, *img_mask_ = nullptr;
  Param *aud_w_ = nullptr, *aud_b_ = nullptr, *aud_mask_ = nullptr, *modality_ = nullptr;
};

// Results of the heads on one micro-batch.
struct HeadResult {
  double loss = 0.0;
  int64_t items = 0;    // pairs / masked positions (0: the term is absent)
  int64_t correct = 0;  // contrastive: pairs whose media embedding retrieves its own text
};

class MultimodalHeads {
 public:
  MultimodalHeads(ParamStore& store, const ModelConfig& cfg);
  // h: final hidden states (B*T, C). With dh: parameter gradients (+=) and dh (+=) get
  // grad_scale * d(loss)/d(.), where loss is the term's mean over its items.
  HeadResult contrastive(const ModelInput& in, const float* h, float temperature, float grad_scale,
                         float* dh);
  HeadResult reconstruction(const ModelInput& in, const uint8_t* masked, const float* h, float grad_scale,
                            float* dh);
  // Projected, unnormalised embeddings of every pair (n_pairs x C each): for retrieval.
  void embed_pairs(const ModelInput& in, const float* h, std::vector<float>& media, std::vector<float>& text);

 private:
  int64_t C_, pd_, fd_;
  Param *con_img_ = nullptr, *con_aud_ = nullptr, *con_txt_ = nullptr;
  Param *rec_img_w_ = nullptr, *rec_img_b_ = nullptr, *rec_aud_w_ = nullptr, *rec_aud_b_ = nullptr;
  std::vector<float> pooled_m_, pooled_t_, a_, b_, da_, db_, dpool_, scratch_;
  std::vector<int32_t> begin_, end_;
};

}  // namespace castor
