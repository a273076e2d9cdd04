// Loader: streams training sequences from corpus shards (docs/data-format.md, "How the
// loader reads shards"). Documents are packed into one position stream (each followed by
// end-of-text; images and audio never straddle a sequence) cut into windows of seq_len;
// each epoch visits the windows in an order shuffled from (seed, epoch). The cursor counts
// windows consumed by the whole job, so any data-parallel layout sees the same global
// stream and a checkpoint restores it exactly, even under another dp. A background thread
// prepares batches ahead into a bounded queue.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/model_input.h"
#include "io/shard.h"

namespace castor::io {

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t index = 0;  // next window of the epoch's order, counted over all dp ranks
};

using castor::Modality;  // core/model_input.h

struct LoaderOptions {
  int64_t seq_len = 0;          // T: positions per sequence
  int64_t batch_size = 1;       // B: sequences per rank per next()
  uint64_t seed = 0;
  bool shuffle = true;          // false: windows in stream order (validation)
  int dp_rank = 0, dp_size = 1;
  int prefetch = 2;             // batches prepared ahead on a thread; 0 = in next()
  int64_t image_patch = 0;      // P: an H x W image is (H/P)(W/P) positions; 0 = refuse images
  int64_t audio_stack = 0;      // log-mel frames per audio position; 0 = refuse audio
  void validate() const;
};

// Where a paired image/audio segment and its caption/transcript sit within a row; only
// pairs wholly inside the sequence are listed.
using PairSpan = castor::MediaPair;

// One rank's micro-batch: B rows of T positions, row-major (B, T) arrays: the model's
// inputs (core/model_input.h; view() gives the ModelInput) plus the document layout.
struct Batch : ModelInputData {
  std::vector<int32_t> position;   // position within its document (0 at a document start)
  std::vector<int32_t> doc;        // document number within the row (0, 1, ...), -1 on padding
  int64_t text_tokens() const;     // positions with modality text
};

class Loader {
 public:
  // path: a shard file or a directory of *.h5 shards (name order).
  Loader(const std::string& path, const LoaderOptions& opts);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // This rank's next micro-batch; advances the global cursor by dp_size * batch_size.
  // next(out) reuses out's buffers (its old contents go back to the prefetch thread), so
  // a training loop that keeps one Batch allocates nothing per step.
  void next(Batch& out);
  Batch next() {
    Batch b;
    next(b);
    return b;
  }
  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& c);

  int64_t windows_per_epoch() const { return n_windows_; }
  int64_t stream_positions() const { return stream_len_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t eot_id() const { return eot_; }
  const std::string& tokenizer() const { return tokenizer_; }
  int64_t num_documents() const { return num_docs_; }
  int64_t num_images() const { return num_images_; }
  int64_t num_audio() const { return num_audio_; }
  int64_t image_channels() const { return image_channels_; }  // 0: no images
  int64_t max_image_grid() const { return max_grid_; }         // largest image side in patches
  int64_t n_mels() const { return n_mels_; }                    // 0: no audio

  // Fills one window (row `row` of `out`): stream positions [w*T, w*T + T].
  void read_window(int64_t w, int64_t row, Batch& out) const;

  // Scratch of one window, kept per thread so a window allocates nothing in steady state.
  struct Scratch;

 private:
  struct Shard;
  struct Piece;
  void build_layout(Shard& s, const std::string& file);
  int64_t window_at(int64_t global) const;  // window index of the global-th sample
  void make_batch(int64_t first_global, Batch& b) const;
  void start_worker();
  void stop_worker();

  LoaderOptions opts_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> shard_start_;  // stream position of each shard's first document
  int64_t stream_len_ = 0, n_windows_ = 0, vocab_size_ = 0;
  int64_t num_docs_ = 0, num_images_ = 0, num_audio_ = 0;
  int32_t eot_ = 0;
  std::string tokenizer_;
  int64_t n_mels_ = 0, image_channels_ = 0, max_grid_ = 0;
  LoaderCursor cursor_;

  // Window orders of the (at most two) epochs in use; guarded by order_mu_.
  mutable std::mutex order_mu_;
  mutable std::vector<std::pair<int64_t, std::vector<int64_t>>> orders_;

  // Prefetch: the worker produces batches for consecutive global starts.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  struct Ready {
    Batch batch;
    std::exception_ptr error;
  };
  std::deque<Ready> queue_;
  std::vector<Batch> spare_;     // consumed batches whose buffers the worker refills
  std::exception_ptr failed_;    // a worker error, raised by every later next()
  bool stop_ = false;
  int64_t produce_next_ = 0;  // global sample index of the worker's next batch
};

}  // namespace castor::io
