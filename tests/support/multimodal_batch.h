// A hand-built multimodal batch for model tests and the PyTorch parity dump: B = 2 rows of
// T = 24 positions with a captioned image, a transcribed audio clip, a prompt/response
// document, an unpaired image and padding (docs/model.md "Inputs per position").
#pragma once
#include <random>
#include <vector>

#include "core/config.h"
#include "core/model_input.h"

namespace castor::testing {

// The batch: B = 2 rows of T = 24 positions, laid out by hand.
struct HandBatch : ModelInputData {
  HandBatch() {
    B = 2;
    T = 24;
    sample = {5, 9};
  }
};

inline HandBatch make_batch(const ModelConfig& m) {
  HandBatch b;
  const int64_t N = b.B * b.T;
  std::mt19937 gen(7);
  std::uniform_int_distribution<int32_t> tok(1, int32_t(m.vocab_size) - 1);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> mel(0.0f, 2.0f);
  b.ids.assign(size_t(N), 0);
  b.modality.assign(size_t(N), uint8_t(Modality::text));
  b.segment_begin.assign(size_t(N), 0);
  b.align.assign(size_t(N), 0);
  auto segment = [&](int64_t row, int64_t begin, int64_t end, Modality kind) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = row * b.T + t;
      b.modality[size_t(n)] = uint8_t(kind);
      b.segment_begin[size_t(n)] = int32_t(begin);
      b.ids[size_t(n)] = kind == Modality::text ? tok(gen) : 0;  // end-of-text (0) at media and padding
    }
  };
  auto image = [&](int64_t row, int64_t begin) {  // a 4x4 image: 2x2 patches of 2x2 pixels
    segment(row, begin, begin + 4, Modality::image);
    for (int32_t k = 0; k < 4; ++k) {
      b.patch_pos.push_back(int32_t(row * b.T + begin + k));
      b.patch_grid.push_back(k / 2);
      b.patch_grid.push_back(k % 2);
      for (int64_t j = 0; j < m.patch_dim(); ++j) b.patches.push_back(unit(gen));
    }
  };
  // Row 0: text, a captioned image, text, a transcribed clip, text.
  segment(0, 0, 4, Modality::text);
  image(0, 4);
  segment(0, 8, 12, Modality::text);  // caption
  segment(0, 12, 14, Modality::text);
  segment(0, 14, 17, Modality::audio);
  for (int64_t k = 0; k < 3; ++k) {
    b.frame_pos.push_back(int32_t(14 + k));
    for (int64_t j = 0; j < m.frame_dim(); ++j) b.frames.push_back(k == 2 && j >= m.n_mels ? 0.0f : mel(gen));
  }
  segment(0, 17, 20, Modality::text);  // transcript
  segment(0, 20, 24, Modality::text);
  b.pairs.push_back({0, Modality::image, 4, 8, 8, 12});
  b.pairs.push_back({0, Modality::audio, 14, 17, 17, 20});
  // Row 1: a prompt (no loss) and its response (align), an unpaired image, text, padding.
  segment(1, 0, 6, Modality::text);
  segment(1, 6, 14, Modality::text);
  image(1, 14);
  segment(1, 18, 22, Modality::text);
  segment(1, 22, 24, Modality::pad);
  b.targets.assign(size_t(N), -1);
  for (int64_t row = 0; row < b.B; ++row)
    for (int64_t t = 0; t + 1 < b.T; ++t) {
      const int64_t n = row * b.T + t;
      if (Modality(b.modality[size_t(n + 1)]) != Modality::text) continue;
      if (row == 1 && t + 1 < 6) continue;  // prompt tokens are not predicted
      b.targets[size_t(n)] = b.ids[size_t(n + 1)];
      b.align[size_t(n)] = row == 1 && t + 1 < 14 ? 1 : 0;
    }
  b.targets[size_t(b.T - 1)] = 3;  // the last position predicts the next window's first token
  return b;
}

}  // namespace castor::testing
