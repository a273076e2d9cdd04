// castor data inspect / verify: a shard's summary (documents, tokens, images, audio
// seconds, bytes) and a full check of every invariant of docs/data-format.md, including
// the ones opening a shard leaves for later (every token id, every audio value).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>

namespace castor::io {

struct ShardSummary {
  std::string path, schema_version, tokenizer;
  int64_t vocab_size = 0, documents = 0, segments = 0, tokens = 0, images = 0, pixel_bytes = 0;
  int64_t audio_clips = 0, audio_frames = 0, file_bytes = 0;
  double audio_seconds = 0.0;
  std::array<int64_t, 3> split_documents{};  // train, validation, test
  void add(const ShardSummary& o);            // totals over several shards
  std::string format() const;                 // a few lines of text
};

ShardSummary inspect_shard(const std::string& path);

// Opens the shard (which checks the header and every table) and reads all tokens and
// audio features in bounded chunks: an id >= vocab_size or a non-finite feature throws
// naming the file, the dataset and the index. progress(done, total) is called per chunk.
ShardSummary verify_shard(const std::string& path,
                          const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace castor::io
