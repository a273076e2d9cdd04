// ModelInput: what one forward pass reads, as views (the loader's io::Batch owns the
// arrays; tests and generation build their own). B rows of T positions; a text-only
// model needs ids (and targets to compute a loss); the multimodal fields are optional.
// Semantics of every field: docs/model.md "Inputs per position".
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace castor {

enum class Modality : uint8_t { text = 0, image = 1, audio = 2, pad = 3 };

// A media segment and the text segment that captions or transcribes it, within row `row`
// (position ranges [begin, end)).
struct MediaPair {
  int32_t row = 0;
  Modality media = Modality::image;
  int32_t media_begin = 0, media_end = 0, text_begin = 0, text_end = 0;
};

struct ModelInput {
  int64_t B = 0, T = 0;
  const int32_t* ids = nullptr;            // (B, T) token per position (end-of-text at media/pad)
  const int32_t* targets = nullptr;        // (B, T) next token or -1; nullptr: no loss
  const uint8_t* modality = nullptr;       // (B, T) Modality; nullptr: all text
  const uint8_t* align = nullptr;          // (B, T) 1: the target is a response token; nullptr: none
  const int32_t* segment_begin = nullptr;  // (B, T) row position where the segment starts
  const int64_t* sample = nullptr;         // (B) global window index of each row (mask draws)
  int64_t n_patches = 0;                   // image positions
  const float* patches = nullptr;          // (n_patches, P*P*Ch) in [0, 1]
  const int32_t* patch_pos = nullptr;      // flat b*T + t of each patch
  const int32_t* patch_grid = nullptr;     // (row, column) in the image's patch grid, 2 per patch
  int64_t n_frames = 0;                    // audio positions
  const float* frames = nullptr;           // (n_frames, audio_stack * n_mels)
  const int32_t* frame_pos = nullptr;
  std::span<const MediaPair> pairs;
  int64_t rows() const { return B * T; }
};

// The arrays behind a ModelInput, owned: the loader's io::Batch, a generation prompt and
// test batches extend it. view() maps an empty optional array to nullptr (no targets: no
// loss; no modality: all text).
struct ModelInputData {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids;            // text token per position (end-of-text at image/audio/pad)
  std::vector<int32_t> targets;        // next text token, -1 where there is no LM loss
  std::vector<uint8_t> modality;       // Modality per position
  std::vector<int32_t> segment_begin;  // row position where the position's segment starts (0: before the row)
  std::vector<uint8_t> align;          // 1: the target is a response token (its document has a prompt segment)
  std::vector<int64_t> sample;         // per row: the global window index (epoch * windows + index)
  // Image positions: patch values P*P*C in [0, 1] (row-major within the patch), the flat
  // position b*T + t of each patch and its (row, column) in the image's patch grid.
  int64_t patch_dim = 0;
  std::vector<float> patches;
  std::vector<int32_t> patch_pos, patch_grid;  // patch_grid: 2 per patch
  // Audio positions: audio_stack consecutive log-mel frames (zero past the clip's end).
  int64_t frame_dim = 0;
  std::vector<float> frames;
  std::vector<int32_t> frame_pos;
  std::vector<MediaPair> pairs;
  ModelInput view() const;
};

}  // namespace castor
