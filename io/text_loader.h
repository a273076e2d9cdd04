// TextLoader: turns text shards into (B, T) training batches. The corpus is one virtual
// token stream (shards in name order, each document followed by the end-of-text id);
// window w covers stream positions [w*T, w*T + T] (T inputs, next-token targets).
// Each epoch visits every window once in an order shuffled by (seed, epoch). The cursor
// (epoch, index) is all the state a checkpoint needs to resume the stream exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace castor::io {

class ShardReader;

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t index = 0;  // next window within the epoch's order
};

// Shard files named by a path: a file, or every *.h5 file of a directory (sorted).
std::vector<std::string> list_shards(const std::string& path);

class TextLoader {
 public:
  TextLoader(const std::string& path, int64_t T, uint64_t seed, bool shuffle);
  ~TextLoader();

  // Next B windows: ids and targets, each (B, T) row-major.
  void next(int64_t B, int32_t* ids, int32_t* targets);

  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& c);
  int64_t windows_per_epoch() const { return n_windows_; }
  int64_t stream_tokens() const { return stream_len_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t eot_id() const { return eot_; }
  const std::string& tokenizer() const { return tokenizer_; }
  // Stream tokens [begin, begin + count) into out (inserting end-of-text ids).
  void read_stream(int64_t begin, int64_t count, int32_t* out);

 private:
  struct Shard;
  void build_order();
  int64_t T_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> shard_start_;  // stream position where each shard starts
  int64_t stream_len_ = 0, n_windows_ = 0, vocab_size_ = 0;
  int32_t eot_ = 0;
  std::string tokenizer_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
  LoaderCursor cursor_;
  std::vector<int32_t> window_;
};

}  // namespace castor::io
