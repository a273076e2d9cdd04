// Corpus shard writer and reader (schema 1.0). The writer streams tokens into an
// extendible chunked dataset of a temporary file and renames it into place on close();
// the reader validates the header and offsets on open and token ids on every read.
#include "io/shard.h"

#include <limits>
#include <utility>

namespace castor::io {

namespace {

constexpr int64_t kMaxVocab = std::numeric_limits<int32_t>::max();

H5Elem token_elem(int64_t vocab_size) { return vocab_size <= 65536 ? H5Elem::u16 : H5Elem::i32; }

}  // namespace

// ---------------------------------------------------------------------------- ShardWriter

ShardWriter::ShardWriter(std::string path, std::string tokenizer, int64_t vocab_size, int32_t eot_id,
                         ShardWriterOptions opts)
    : out_(std::move(path)),
      tokenizer_(std::move(tokenizer)),
      vocab_size_(vocab_size),
      eot_id_(eot_id),
      opts_(std::move(opts)) {
  CASTOR_CHECK(!tokenizer_.empty(), out_.path(), ": shard needs a tokenizer name");
  CASTOR_CHECK(vocab_size_ >= 1 && vocab_size_ <= kMaxVocab, out_.path(), ": vocab_size ", vocab_size_, " outside [1, ",
               kMaxVocab, "]");
  CASTOR_CHECK(eot_id_ >= 0 && eot_id_ < vocab_size_, out_.path(), ": eot_id ", eot_id_, " outside [0, vocab_size ",
               vocab_size_, ")");
  CASTOR_CHECK(opts_.chunk_tokens >= 1, out_.path(), ": chunk_tokens must be >= 1, got ", opts_.chunk_tokens);
  CASTOR_CHECK(opts_.deflate_level >= 0 && opts_.deflate_level <= 9, out_.path(), ": deflate level must be 0..9, got ",
               opts_.deflate_level);
  out_.create();  // on a throw below, out_ removes the temporary file
  DatasetOptions d;
  d.chunk_rows = opts_.chunk_tokens;
  d.deflate_level = opts_.deflate_level;
  d.extendible = true;
  tokens_ = out_.file().root().create_dataset("text/tokens", token_elem(vocab_size_), {0}, d);
  buffer_.reserve(static_cast<size_t>(opts_.chunk_tokens));
}

void ShardWriter::add_document(std::span<const int32_t> tokens) {
  CASTOR_CHECK(!out_.committed(), path(), ": add_document after close()");
  const int64_t doc = num_documents();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    CASTOR_CHECK(id >= 0 && id < vocab_size_, path(), ": document ", doc, ": token id ", id, " at position ", i,
                 " outside [0, vocab_size ", vocab_size_, ")");
  }
  size_t pos = 0;
  while (pos < tokens.size()) {
    const size_t room = static_cast<size_t>(opts_.chunk_tokens) - buffer_.size();
    const size_t take = std::min(room, tokens.size() - pos);
    buffer_.insert(buffer_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(pos),
                   tokens.begin() + static_cast<std::ptrdiff_t>(pos + take));
    pos += take;
    if (buffer_.size() == static_cast<size_t>(opts_.chunk_tokens)) flush_buffer();
  }
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(tokens.size()));
}

void ShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  tokens_.append(buffer_.data(), static_cast<int64_t>(buffer_.size()));
  buffer_.clear();
}

void ShardWriter::close() {
  CASTOR_CHECK(!out_.committed(), path(), ": close() called twice");
  flush_buffer();
  CASTOR_CHECK(tokens_.size() == num_tokens(), path(), ": wrote ", tokens_.size(), " tokens, expected ", num_tokens());
  {
    Group root = out_.file().root();
    DatasetOptions d;
    d.deflate_level = opts_.deflate_level;
    root.write_vector<int64_t>("text/doc_offsets", offsets_, d);
    write_castor_header(root, kShardFormat, kShardSchemaVersion);
    root.write_attr_string("tokenizer", tokenizer_);
    root.write_attr_int64("vocab_size", vocab_size_);
    root.write_attr_int64("eot_id", eot_id_);
    root.write_attr_int64("num_documents", num_documents());
    root.write_attr_int64("num_tokens", num_tokens());
    Group meta = root.create_group("meta");
    meta.write_attr_strings("sources", opts_.sources);
  }
  tokens_ = Dataset();
  out_.commit();
}

// ---------------------------------------------------------------------------- ShardReader

ShardReader::ShardReader(const std::string& path) : file_(File::open_read(path)) {
  const Group root = file_.root();
  schema_version_ = check_castor_header(root, kShardFormat, kShardSchemaMajor);
  tokenizer_ = root.read_attr_string("tokenizer");
  CASTOR_CHECK(!tokenizer_.empty(), root.attr_where("tokenizer"), ": empty");
  vocab_size_ = root.read_attr_int64("vocab_size");
  CASTOR_CHECK(vocab_size_ >= 1 && vocab_size_ <= kMaxVocab, root.attr_where("vocab_size"), ": ", vocab_size_,
               " outside [1, ", kMaxVocab, "]");
  const int64_t eot = root.read_attr_int64("eot_id");
  CASTOR_CHECK(eot >= 0 && eot < vocab_size_, root.attr_where("eot_id"), ": ", eot, " outside [0, vocab_size ",
               vocab_size_, ")");
  eot_id_ = static_cast<int32_t>(eot);
  const int64_t num_docs = root.read_attr_int64("num_documents");
  CASTOR_CHECK(num_docs >= 0, root.attr_where("num_documents"), ": negative (", num_docs, ")");
  const int64_t num_tokens = root.read_attr_int64("num_tokens");
  CASTOR_CHECK(num_tokens >= 0, root.attr_where("num_tokens"), ": negative (", num_tokens, ")");

  tokens_ = root.open_dataset("text/tokens");
  CASTOR_CHECK(tokens_.shape().size() == 1, tokens_.where(), ": expected rank 1, found rank ", tokens_.shape().size());
  CASTOR_CHECK(tokens_.is_integer(), tokens_.where(), ": token ids must be integers, stored as ",
               tokens_.is_float() ? "float" : "non-numeric data");
  CASTOR_CHECK(tokens_.size() == num_tokens, tokens_.where(), ": has ", tokens_.size(),
               " tokens, attribute /num_tokens says ", num_tokens);

  Dataset offsets = root.open_dataset("text/doc_offsets");
  CASTOR_CHECK(offsets.shape().size() == 1, offsets.where(), ": expected rank 1, found rank ", offsets.shape().size());
  CASTOR_CHECK(offsets.is_integer(), offsets.where(), ": offsets must be integers");
  CASTOR_CHECK(offsets.size() == num_docs + 1, offsets.where(), ": has ", offsets.size(),
               " entries, expected num_documents + 1 = ", num_docs + 1);
  offsets_ = offsets.read_all<int64_t>();
  for (size_t i = 0; i < offsets_.size(); ++i) {
    const int64_t o = offsets_[i];
    CASTOR_CHECK(o >= 0 && o <= num_tokens, offsets.where(), ": offset[", i, "] = ", o, " outside [0, num_tokens ",
                 num_tokens, "]");
    CASTOR_CHECK(i == 0 || o >= offsets_[i - 1], offsets.where(), ": offsets not monotone: offset[", i, "] = ", o,
                 " < offset[", i - 1, "] = ", offsets_[i - 1]);
  }
  CASTOR_CHECK(offsets_.front() == 0, offsets.where(), ": offset[0] = ", offsets_.front(), ", expected 0");
  CASTOR_CHECK(offsets_.back() == num_tokens, offsets.where(), ": last offset ", offsets_.back(), " != num_tokens ",
               num_tokens);

  if (root.is_group("meta")) {
    const Group meta = root.open_group("meta");
    if (meta.has_attr("sources")) sources_ = meta.read_attr_strings("sources");
  }
}

void ShardReader::read_tokens(int64_t begin, int64_t count, int32_t* out) const {
  tokens_.read_range(begin, count, out);
  for (int64_t i = 0; i < count; ++i) {
    const int32_t id = out[i];
    if (id < 0 || id >= vocab_size_) {
      CASTOR_FAIL(tokens_.where(), ": id ", id, id < 0 ? " < 0" : " >= vocab_size ",
                  id < 0 ? std::string() : std::to_string(vocab_size_), " at index ", begin + i);
    }
  }
}

std::vector<int32_t> ShardReader::read_document(int64_t doc) const {
  CASTOR_CHECK(doc >= 0 && doc < num_documents(), path(), ": document ", doc, " outside [0, ", num_documents(), ")");
  const int64_t begin = offsets_[static_cast<size_t>(doc)];
  std::vector<int32_t> out(static_cast<size_t>(offsets_[static_cast<size_t>(doc) + 1] - begin));
  read_tokens(begin, static_cast<int64_t>(out.size()), out.data());
  return out;
}

}  // namespace castor::io
