// Shard summaries and full verification (see shard_check.h).
#include "io/shard_check.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/shard.h"

namespace castor::io {
namespace {

ShardSummary summarize(const ShardReader& r) {
  ShardSummary s;
  s.path = r.path();
  s.schema_version = r.schema_version();
  s.tokenizer = r.tokenizer();
  s.vocab_size = r.vocab_size();
  s.documents = r.num_documents();
  s.segments = r.num_segments();
  s.tokens = r.num_tokens();
  s.images = r.num_images();
  s.pixel_bytes = r.pixel_bytes();
  s.audio_clips = r.num_audio();
  s.audio_frames = r.total_audio_frames();
  if (r.audio_config()) s.audio_seconds = double(r.total_audio_samples()) / double(r.audio_config()->sample_rate);
  for (int64_t d = 0; d < r.num_documents(); ++d) ++s.split_documents[size_t(r.doc_split(d))];
  std::error_code ec;
  s.file_bytes = int64_t(std::filesystem::file_size(r.path(), ec));
  return s;
}

}  // namespace

void ShardSummary::add(const ShardSummary& o) {
  documents += o.documents;
  segments += o.segments;
  tokens += o.tokens;
  images += o.images;
  pixel_bytes += o.pixel_bytes;
  audio_clips += o.audio_clips;
  audio_frames += o.audio_frames;
  audio_seconds += o.audio_seconds;
  file_bytes += o.file_bytes;
  for (size_t i = 0; i < 3; ++i) split_documents[i] += o.split_documents[i];
}

std::string ShardSummary::format() const {
  std::string s = cat(path, "\n");
  if (!schema_version.empty())
    s += cat("  schema ", schema_version, ", tokenizer ", tokenizer, " (vocab ", vocab_size, ")\n");
  s += cat("  documents ", documents, " (train ", split_documents[0], ", validation ", split_documents[1], ", test ",
           split_documents[2], "), segments ", segments, "\n");
  s += cat("  tokens ", tokens, "\n");
  s += cat("  images ", images, " (", pixel_bytes, " pixel bytes)\n");
  char audio[96];
  std::snprintf(audio, sizeof(audio), "  audio %lld clips, %.2f s, %lld frames\n", static_cast<long long>(audio_clips),
                audio_seconds, static_cast<long long>(audio_frames));
  s += audio;
  s += cat("  file ", file_bytes, " bytes\n");
  return s;
}

ShardSummary inspect_shard(const std::string& path) { return summarize(ShardReader(path)); }

ShardSummary verify_shard(const std::string& path, const std::function<void(int64_t, int64_t)>& progress) {
  const ShardReader r(path);
  const int64_t n_mels = r.audio_config() ? r.audio_config()->n_mels : 0;
  const int64_t total = r.num_tokens() + r.total_audio_frames() * n_mels;
  int64_t done = 0;
  constexpr int64_t kChunk = int64_t(1) << 20;
  std::vector<int32_t> ids;
  for (int64_t b = 0; b < r.num_tokens(); b += kChunk) {
    const int64_t n = std::min(kChunk, r.num_tokens() - b);
    ids.resize(size_t(n));
    r.read_tokens(b, n, ids.data());  // throws on the first id outside the vocabulary
    done += n;
    if (progress) progress(done, total);
  }
  // Features and pixels are read in pieces of at most kChunk values, whatever size the
  // file claims for one clip or image.
  std::vector<float> frames;
  const auto& fo = r.audio_frame_offsets();
  const int64_t rows_per_read = std::max<int64_t>(1, kChunk / std::max<int64_t>(n_mels, 1));
  for (int64_t f0 = 0; f0 < r.total_audio_frames(); f0 += rows_per_read) {
    const int64_t rows = std::min(rows_per_read, r.total_audio_frames() - f0);
    frames.resize(size_t(rows * n_mels));
    r.read_feature_rows(f0, rows, frames.data());
    for (size_t i = 0; i < frames.size(); ++i) {
      if (std::isfinite(frames[i])) continue;
      const int64_t frame = f0 + int64_t(i) / n_mels;
      const int64_t clip = std::upper_bound(fo.begin(), fo.end(), frame) - fo.begin() - 1;
      CASTOR_FAIL(path, ": dataset /audio/features: clip ", clip, ": value ", frames[i], " at frame ",
                  frame - fo[size_t(clip)], " mel ", int64_t(i) % n_mels, " is not finite");
    }
    done += int64_t(frames.size());
    if (progress) progress(done, total);
  }
  std::vector<uint8_t> pixels;  // any byte is a valid pixel, but every chunk must be readable
  for (int64_t p0 = 0; p0 < r.pixel_bytes(); p0 += kChunk) {
    const int64_t n = std::min(kChunk, r.pixel_bytes() - p0);
    pixels.resize(size_t(n));
    r.read_pixel_bytes(p0, n, pixels.data());
  }
  return summarize(r);
}

}  // namespace castor::io
