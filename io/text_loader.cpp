// TextLoader: virtual token stream over shards, shuffled window order per epoch,
// exact cursor. Reads only the token ranges a window needs (no whole-shard loads).
#include "io/text_loader.h"

#include <algorithm>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "io/shard.h"

namespace castor::io {

struct TextLoader::Shard {
  std::unique_ptr<ShardReader> reader;
  std::vector<int64_t> offsets;       // stored-token offsets per document (+ end)
  std::vector<int64_t> doc_stream;    // stream start of each document within the shard
  int64_t stream_len = 0;             // stored tokens + one end-of-text per document
};

std::vector<std::string> list_shards(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CASTOR_CHECK(fs::exists(path, ec), path, ": no such file or directory");
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && e.path().extension() == ".h5") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  CASTOR_CHECK(!files.empty(), path, ": directory holds no *.h5 shards");
  return files;
}

namespace {

// Reads every token once, in bounded chunks, so an id outside the vocabulary is
// reported before training starts rather than hours into a run.
void validate_tokens(const ShardReader& r) {
  constexpr int64_t kChunk = int64_t(1) << 20;
  std::vector<int32_t> buf(size_t(std::min<int64_t>(kChunk, std::max<int64_t>(r.num_tokens(), 1))));
  for (int64_t b = 0; b < r.num_tokens(); b += kChunk) r.read_tokens(b, std::min(kChunk, r.num_tokens() - b), buf.data());
}

}  // namespace

TextLoader::TextLoader(const std::string& path, int64_t T, uint64_t seed, bool shuffle)
    : T_(T), seed_(seed), shuffle_(shuffle) {
  CASTOR_CHECK(T > 0, "loader: sequence length must be positive");
  for (const std::string& file : list_shards(path)) {
    auto s = std::make_unique<Shard>();
    s->reader = std::make_unique<ShardReader>(file);
    const ShardReader& r = *s->reader;
    if (shards_.empty()) {
      vocab_size_ = r.vocab_size();
      eot_ = int32_t(r.eot_id());
      tokenizer_ = r.tokenizer();
    } else {
      CASTOR_CHECK(r.tokenizer() == tokenizer_ && r.vocab_size() == vocab_size_, file, ": tokenizer ", r.tokenizer(),
                   " (vocab ", r.vocab_size(), ") differs from the first shard's ", tokenizer_, " (vocab ",
                   vocab_size_, ")");
    }
    s->offsets = r.doc_offsets();
    const int64_t docs = int64_t(s->offsets.size()) - 1;
    s->doc_stream.resize(size_t(docs));
    for (int64_t d = 0; d < docs; ++d) s->doc_stream[size_t(d)] = s->offsets[size_t(d)] + d;
    s->stream_len = r.num_tokens() + docs;
    validate_tokens(r);
    shard_start_.push_back(stream_len_);
    stream_len_ += s->stream_len;
    shards_.push_back(std::move(s));
  }
  n_windows_ = (stream_len_ - 1) / T_;
  CASTOR_CHECK(n_windows_ > 0, path, ": ", stream_len_, " tokens are too few for one sequence of ", T_, " + 1");
  window_.resize(size_t(T_ + 1));
  build_order();
}

TextLoader::~TextLoader() = default;

void TextLoader::build_order() {
  order_.resize(size_t(n_windows_));
  for (int64_t i = 0; i < n_windows_; ++i) order_[size_t(i)] = i;
  if (shuffle_) {
    // Fisher-Yates with our own index draw so the order is the same on every platform.
    std::mt19937_64 gen(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(cursor_.epoch) + 1);
    for (int64_t i = n_windows_ - 1; i > 0; --i) {
      int64_t j = int64_t(gen() % uint64_t(i + 1));
      std::swap(order_[size_t(i)], order_[size_t(j)]);
    }
  }
  order_epoch_ = cursor_.epoch;
}

void TextLoader::set_cursor(const LoaderCursor& c) {
  CASTOR_CHECK(c.epoch >= 0 && c.index >= 0 && c.index <= n_windows_, "loader cursor (epoch ", c.epoch, ", index ",
               c.index, ") does not fit this corpus of ", n_windows_, " windows");
  cursor_ = c;
  if (order_epoch_ != cursor_.epoch) build_order();
}

void TextLoader::read_stream(int64_t begin, int64_t count, int32_t* out) {
  CASTOR_CHECK(begin >= 0 && begin + count <= stream_len_, "loader: stream range out of bounds");
  int64_t p = begin, end = begin + count;
  while (p < end) {
    size_t si = size_t(std::upper_bound(shard_start_.begin(), shard_start_.end(), p) - shard_start_.begin() - 1);
    Shard& s = *shards_[si];
    int64_t local = p - shard_start_[si];
    size_t d = size_t(std::upper_bound(s.doc_stream.begin(), s.doc_stream.end(), local) - s.doc_stream.begin() - 1);
    int64_t in_doc = local - s.doc_stream[d];
    int64_t doc_len = s.offsets[d + 1] - s.offsets[d];
    if (in_doc == doc_len) {
      *out++ = eot_;
      ++p;
      continue;
    }
    int64_t n = std::min(doc_len - in_doc, end - p);
    s.reader->read_tokens(s.offsets[d] + in_doc, n, out);
    out += n;
    p += n;
  }
}

void TextLoader::next(int64_t B, int32_t* ids, int32_t* targets) {
  for (int64_t b = 0; b < B; ++b) {
    if (cursor_.index >= n_windows_) {
      cursor_.epoch += 1;
      cursor_.index = 0;
    }
    if (order_epoch_ != cursor_.epoch) build_order();
    const int64_t w = order_[size_t(cursor_.index++)];
    read_stream(w * T_, T_ + 1, window_.data());
    std::copy(window_.begin(), window_.begin() + T_, ids + b * T_);
    std::copy(window_.begin() + 1, window_.end(), targets + b * T_);
  }
}

}  // namespace castor::io
