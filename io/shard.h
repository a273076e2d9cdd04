// Corpus shard format, schema 1.1 (docs/data-format.md): one HDF5 file of tokenized
// multimodal documents. A document is an ordered list of segments (text, image, audio);
// text tokens live in /text, image pixels in /images, log-mel audio features in /audio,
// the segment table in /segments and per-document metadata in /docs. Schema 1.0 shards
// (text only, no /segments) are read as one text segment per document.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/audio.h"
#include "io/hdf5.h"
#include "io/image.h"

namespace castor::io {

inline constexpr const char* kShardFormat = "corpus-shard";
inline constexpr const char* kShardSchemaVersion = "1.1";
inline constexpr int kShardSchemaMajor = 1;

enum class SegmentKind : uint8_t { text = 0, image = 1, audio = 2 };
enum class Split : uint8_t { train = 0, validation = 1, test = 2 };
const char* segment_kind_name(SegmentKind k);  // "text", "image", "audio"
const char* split_name(Split s);               // "train", "validation", "test"
Split parse_split(const std::string& name);    // throws on anything else

// Segment flags (bit set in /segments/flags).
inline constexpr uint8_t kSegmentNoLoss = 1;  // text excluded from the LM loss (a prompt)

// One row of the segment table. start/length: text -> tokens [start, start + length) of
// /text/tokens; image/audio -> item `start` of /images or /audio, length 1. pair: for an
// image/audio segment, the (shard-global) index of the text segment that captions or
// transcribes it, or -1; always -1 for text.
struct SegmentInfo {
  SegmentKind kind = SegmentKind::text;
  uint8_t flags = 0;
  int64_t start = 0, length = 0, pair = -1;
};

// Log-mel features of one clip, frames x n_mels row-major.
struct AudioFeatures {
  int64_t frames = 0;
  int64_t num_samples = 0;  // clip length in samples at the feature sample rate
  std::vector<float> data;
};

// One segment of a document handed to the writer.
struct SegmentData {
  SegmentKind kind = SegmentKind::text;
  std::vector<int32_t> tokens;  // text
  Image image;                  // image
  AudioFeatures audio;          // audio
  int64_t pair = -1;            // image/audio: index within the document of its caption
  uint8_t flags = 0;
};

struct DocumentData {
  std::vector<SegmentData> segments;
  int32_t source = -1;  // index into ShardWriterOptions::sources, or -1
  Split split = Split::train;
};

struct ShardWriterOptions {
  int deflate_level = 0;                    // 0 = uncompressed; 1..9 = shuffle + gzip level
  int64_t chunk_tokens = int64_t{1} << 16;  // HDF5 chunk (and append buffer) in tokens
  std::vector<std::string> sources;         // provenance (input files), /meta attribute "sources"
  std::optional<LogMelConfig> audio;        // required to write audio segments
  bool audio_f16 = false;                   // store features as float16 (else float32)
};

// Writes one shard. Everything goes to "<path>.tmp", renamed to path by close(), so no
// half-written shard is ever visible under path. Tokens, pixels and features are appended
// in chunk-sized pieces; only the small per-segment/per-item tables stay in memory.
class ShardWriter {
 public:
  ShardWriter(std::string path, std::string tokenizer, int64_t vocab_size, int32_t eot_id,
              ShardWriterOptions opts = {});
  ~ShardWriter() = default;  // without close(): out_ discards the temporary file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends a text-only document (one text segment); every id must lie in [0, vocab_size).
  void add_document(std::span<const int32_t> tokens);
  // Appends a document of any segments; checks ids, image shapes, audio shapes and pairs.
  void add_document(const DocumentData& doc);
  // Writes tables and counts, closes the file and renames it into place.
  void close();

  const std::string& path() const { return out_.path(); }
  int64_t num_documents() const { return static_cast<int64_t>(doc_offsets_.size()) - 1; }
  int64_t num_tokens() const { return token_count_; }
  int64_t num_images() const { return static_cast<int64_t>(image_offsets_.size()) - 1; }
  int64_t num_audio() const { return static_cast<int64_t>(audio_offsets_.size()) - 1; }
  int64_t pixel_bytes() const { return image_offsets_.back(); }
  int64_t audio_frames() const { return audio_offsets_.back(); }

 private:
  void check_document(const DocumentData& doc) const;
  void append_tokens(std::span<const int32_t> tokens);
  void flush();

  StagedFile out_;  // "<path>.tmp" until close(); declared first, so destroyed after the datasets
  std::string tokenizer_;
  int64_t vocab_size_;
  int32_t eot_id_;
  ShardWriterOptions opts_;
  Dataset tokens_, pixels_, features_;
  std::vector<int32_t> token_buf_;
  std::vector<uint8_t> pixel_buf_;
  std::vector<float> feature_buf_;
  int64_t token_count_ = 0;
  std::vector<int64_t> doc_offsets_{0}, seg_doc_offsets_{0};
  std::vector<uint8_t> seg_kind_, seg_flags_, doc_split_;
  std::vector<int64_t> seg_start_, seg_length_, seg_pair_;
  std::vector<int32_t> doc_source_, image_shape_;
  std::vector<int64_t> image_offsets_{0}, audio_offsets_{0}, audio_samples_;
};

// Reads one shard. Opening validates the header and every table (offsets, segments, pairs,
// image shapes, audio frame counts, document metadata): O(segments + items) reads, never
// the tokens, pixels or features. Token ids are checked by read_tokens, on the range read.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::string& schema_version() const { return schema_version_; }
  const std::string& tokenizer() const { return tokenizer_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t eot_id() const { return eot_id_; }
  int64_t num_documents() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t num_tokens() const { return offsets_.back(); }
  const std::vector<int64_t>& doc_offsets() const { return offsets_; }  // num_documents + 1
  const std::vector<std::string>& sources() const { return sources_; }  // may be empty

  // Segments: document d owns segments [segment_offsets()[d], segment_offsets()[d + 1]).
  int64_t num_segments() const { return static_cast<int64_t>(segments_.size()); }
  const std::vector<SegmentInfo>& segments() const { return segments_; }
  const std::vector<int64_t>& segment_offsets() const { return seg_offsets_; }
  int32_t doc_source(int64_t d) const { return doc_source_.empty() ? -1 : doc_source_[static_cast<size_t>(d)]; }
  Split doc_split(int64_t d) const {
    return doc_split_.empty() ? Split::train : static_cast<Split>(doc_split_[static_cast<size_t>(d)]);
  }

  int64_t num_images() const { return static_cast<int64_t>(image_offsets_.size()) - 1; }
  // (height, width, channels) of image i.
  std::span<const int32_t, 3> image_shape(int64_t i) const {
    return std::span<const int32_t, 3>(image_shape_.data() + 3 * i, 3);
  }
  int64_t image_bytes(int64_t i) const { return image_offsets_[size_t(i) + 1] - image_offsets_[size_t(i)]; }
  int64_t pixel_bytes() const { return image_offsets_.back(); }
  void read_image(int64_t i, uint8_t* out) const;  // image_bytes(i) bytes, H x W x C

  int64_t num_audio() const { return static_cast<int64_t>(audio_offsets_.size()) - 1; }
  const std::optional<LogMelConfig>& audio_config() const { return audio_cfg_; }
  bool audio_f16() const { return audio_f16_; }
  int64_t audio_frames(int64_t a) const { return audio_offsets_[size_t(a) + 1] - audio_offsets_[size_t(a)]; }
  int64_t audio_num_samples(int64_t a) const { return audio_samples_[size_t(a)]; }
  int64_t total_audio_frames() const { return audio_offsets_.back(); }
  int64_t total_audio_samples() const { return total_samples_; }
  void read_audio(int64_t a, float* out) const;  // audio_frames(a) x n_mels floats
  const std::vector<int64_t>& audio_frame_offsets() const { return audio_offsets_; }  // num_audio + 1
  // Raw ranges of the payload datasets (verify reads them in bounded pieces).
  void read_feature_rows(int64_t begin, int64_t count, float* out) const { features_.read_range(begin, count, out); }
  void read_pixel_bytes(int64_t begin, int64_t count, uint8_t* out) const { pixels_.read_range(begin, count, out); }

  // Reads tokens [begin, begin + count) of the concatenated stream into out and checks
  // each id is in [0, vocab_size); a bad id throws naming file, dataset and index.
  void read_tokens(int64_t begin, int64_t count, int32_t* out) const;
  std::vector<int32_t> read_document(int64_t doc) const;  // all text tokens of doc

 private:
  void read_segments(const Group& root);
  void read_images(const Group& root);
  void read_audio_tables(const Group& root);
  void read_docs(const Group& root);

  File file_;
  Dataset tokens_, pixels_, features_;
  bool tokens_u16_ = false;  // stored as uint16 (else int32)
  std::string schema_version_;
  std::string tokenizer_;
  int64_t vocab_size_ = 0;
  int32_t eot_id_ = 0;
  std::vector<int64_t> offsets_;
  std::vector<std::string> sources_;
  std::vector<SegmentInfo> segments_;
  std::vector<int64_t> seg_offsets_;
  std::vector<int32_t> doc_source_;
  std::vector<uint8_t> doc_split_;
  std::vector<int64_t> image_offsets_{0}, audio_offsets_{0}, audio_samples_;
  int64_t total_samples_ = 0;
  std::vector<int32_t> image_shape_;
  std::optional<LogMelConfig> audio_cfg_;
  bool audio_f16_ = false;
};

// Every shard file named by a path: a file, or every *.h5 file of a directory (sorted).
std::vector<std::string> list_shards(const std::string& path);

}  // namespace castor::io
