// Corpus shard format, schema 1.0 (docs/data-format.md): one HDF5 file per shard holding
// tokenized documents concatenated in /text/tokens (uint16 when vocab_size <= 65536, else
// int32; no separators: the loader inserts eot between documents) and their boundaries in
// /text/doc_offsets (int64, num_documents + 1 entries). Root attributes carry the format,
// schema version, tokenizer identity and counts. Later schema minors add groups (images,
// audio, segment tables) beside /text; readers of 1.x ignore what they do not know.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/hdf5.h"

namespace castor::io {

inline constexpr const char* kShardFormat = "corpus-shard";
inline constexpr const char* kShardSchemaVersion = "1.0";
inline constexpr int kShardSchemaMajor = 1;

struct ShardWriterOptions {
  int deflate_level = 0;                    // 0 = uncompressed; 1..9 = shuffle + gzip level
  int64_t chunk_tokens = int64_t{1} << 16;  // HDF5 chunk (and append buffer) in tokens
  std::vector<std::string> sources;         // provenance (input files), /meta attribute "sources"
};

// Writes one shard. Everything goes to "<path>.tmp", renamed to path by close(), so no
// half-written shard is ever visible under path. Tokens are appended to the file in
// chunk_tokens pieces; only the document offsets are kept in memory.
class ShardWriter {
 public:
  ShardWriter(std::string path, std::string tokenizer, int64_t vocab_size, int32_t eot_id,
              ShardWriterOptions opts = {});
  ~ShardWriter() = default;  // without close(): out_ discards the temporary file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one document; every id must lie in [0, vocab_size). Empty documents are kept.
  void add_document(std::span<const int32_t> tokens);
  // Writes offsets and counts, closes the file and renames it into place.
  void close();

  const std::string& path() const { return out_.path(); }
  int64_t num_documents() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t num_tokens() const { return offsets_.back(); }

 private:
  void flush_buffer();

  StagedFile out_;  // "<path>.tmp" until close(); declared before tokens_, so destroyed after it
  std::string tokenizer_;
  int64_t vocab_size_;
  int32_t eot_id_;
  ShardWriterOptions opts_;
  Dataset tokens_;
  std::vector<int32_t> buffer_;
  std::vector<int64_t> offsets_{0};
};

// Reads one shard. Opening validates the header (format, schema major, tokenizer, vocab,
// eot, counts), the presence, rank and type of the datasets, and the document offsets
// (which are read: 0 first, non-decreasing, num_tokens last). Token ids are validated
// lazily by read_tokens, which reads just the requested range.
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

  // Reads tokens [begin, begin + count) of the concatenated stream into out and checks
  // each id is in [0, vocab_size); a bad id throws naming file, dataset and index.
  void read_tokens(int64_t begin, int64_t count, int32_t* out) const;
  std::vector<int32_t> read_document(int64_t doc) const;

 private:
  File file_;
  Dataset tokens_;
  std::string schema_version_;
  std::string tokenizer_;
  int64_t vocab_size_ = 0;
  int32_t eot_id_ = 0;
  std::vector<int64_t> offsets_;
  std::vector<std::string> sources_;
};

}  // namespace castor::io
