// Loader: the position-stream layout over shards, window filling (text tokens read as one
// contiguous range per shard, images cut into patches, audio frames stacked), the global
// cursor shared by all dp ranks, and the prefetch thread.
#include "io/loader.h"

#include <algorithm>
#include <random>

#include "core/error.h"

namespace castor::io {

struct Loader::Shard {
  std::unique_ptr<ShardReader> reader;
  std::vector<int64_t> doc_start;      // stream position of each document (+ end of shard)
  std::vector<int64_t> seg_start;      // stream position of each segment
  std::vector<int32_t> seg_positions;  // positions each segment occupies
};

// A run of text positions of one window, read from one shard.
struct Loader::Piece {
  int64_t token, count, dest;
  bool no_loss;
};

struct Loader::Scratch {
  std::vector<uint8_t> kind, no_loss, pixels, prompted;
  std::vector<int32_t> token, docpos, docnum, tokens, segbeg;
  std::vector<float> features;
  std::vector<Piece> pieces;
};

void LoaderOptions::validate() const {
  CASTOR_CHECK(seq_len > 0, "loader: sequence length must be positive (got ", seq_len, ")");
  CASTOR_CHECK(batch_size > 0, "loader: batch size must be positive (got ", batch_size, ")");
  CASTOR_CHECK(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size, "loader: dp rank ", dp_rank, " outside [0, ",
               dp_size, ")");
  CASTOR_CHECK(prefetch >= 0, "loader: prefetch must be >= 0 (got ", prefetch, ")");
  CASTOR_CHECK(image_patch >= 0 && audio_stack >= 0, "loader: image patch and audio stack must be >= 0");
}

int64_t Batch::text_tokens() const {
  return std::count(modality.begin(), modality.end(), static_cast<uint8_t>(Modality::text));
}

Loader::Loader(const std::string& path, const LoaderOptions& opts) : opts_(opts) {
  opts_.validate();
  int64_t channels = 0;
  std::optional<LogMelConfig> audio;
  for (const std::string& file : list_shards(path)) {
    auto s = std::make_unique<Shard>();
    s->reader = std::make_unique<ShardReader>(file);
    const ShardReader& r = *s->reader;
    if (shards_.empty()) {
      vocab_size_ = r.vocab_size();
      eot_ = r.eot_id();
      tokenizer_ = r.tokenizer();
    } else {
      CASTOR_CHECK(r.tokenizer() == tokenizer_ && r.vocab_size() == vocab_size_, file, ": tokenizer ", r.tokenizer(),
                   " (vocab ", r.vocab_size(), ") differs from the first shard's ", tokenizer_, " (vocab ",
                   vocab_size_, ")");
    }
    for (int64_t i = 0; i < r.num_images(); ++i) {
      const int64_t c = r.image_shape(i)[2];
      CASTOR_CHECK(channels == 0 || c == channels, file, ": image ", i, " has ", c, " channels, earlier images ",
                   channels, " (prep all images with the same --channels)");
      channels = c;
      if (opts_.image_patch > 0)
        max_grid_ = std::max<int64_t>(max_grid_, std::max(r.image_shape(i)[0], r.image_shape(i)[1]) / opts_.image_patch);
    }
    if (r.num_audio() > 0) {
      const LogMelConfig& c = *r.audio_config();
      CASTOR_CHECK(!audio || (audio->n_mels == c.n_mels && audio->hop_length == c.hop_length &&
                              audio->sample_rate == c.sample_rate),
                   file, ": audio features (", c.n_mels, " mels, hop ", c.hop_length, ", ", c.sample_rate,
                   " Hz) differ from an earlier shard's");
      audio = c;
      n_mels_ = c.n_mels;
    }
    shard_start_.push_back(stream_len_);
    build_layout(*s, file);
    stream_len_ = s->doc_start.back();
    num_docs_ += r.num_documents();
    num_images_ += r.num_images();
    num_audio_ += r.num_audio();
    shards_.push_back(std::move(s));
  }
  image_channels_ = channels;
  n_windows_ = (stream_len_ - 1) / opts_.seq_len;
  CASTOR_CHECK(n_windows_ > 0, path, ": ", stream_len_, " positions are too few for one sequence of ", opts_.seq_len,
               " + 1");
  if (opts_.prefetch > 0) start_worker();
}

Loader::~Loader() { stop_worker(); }

void Loader::build_layout(Shard& s, const std::string& file) {
  const ShardReader& r = *s.reader;
  const int64_t T = opts_.seq_len, P = opts_.image_patch, K = opts_.audio_stack;
  CASTOR_CHECK(r.num_images() == 0 || P > 0, file, ": has ", r.num_images(),
               " images, but this model takes no image input (image patch size 0)");
  CASTOR_CHECK(r.num_audio() == 0 || K > 0, file, ": has ", r.num_audio(),
               " audio clips, but this model takes no audio input (audio frames per position 0)");
  const auto& segs = r.segments();
  const auto& seg_off = r.segment_offsets();
  s.doc_start.resize(size_t(r.num_documents()) + 1);
  s.seg_start.resize(segs.size());
  s.seg_positions.resize(segs.size());
  int64_t pos = stream_len_;
  for (int64_t d = 0; d < r.num_documents(); ++d) {
    s.doc_start[size_t(d)] = pos;
    for (int64_t i = seg_off[size_t(d)]; i < seg_off[size_t(d) + 1]; ++i) {
      const SegmentInfo& seg = segs[size_t(i)];
      int64_t n = seg.length;
      if (seg.kind == SegmentKind::image) {
        const auto shape = r.image_shape(seg.start);
        CASTOR_CHECK(shape[0] % P == 0 && shape[1] % P == 0, file, ": image ", seg.start, " is ", shape[0], "x",
                     shape[1], ", not a multiple of the patch size ", P);
        n = (shape[0] / P) * (shape[1] / P);
      } else if (seg.kind == SegmentKind::audio) {
        n = (r.audio_frames(seg.start) + K - 1) / K;
      }
      if (seg.kind != SegmentKind::text) {
        CASTOR_CHECK(n <= T, file, ": ", segment_kind_name(seg.kind), " ", seg.start, " takes ", n,
                     " positions, more than the sequence length ", T);
        if (pos / T != (pos + n - 1) / T) pos = (pos / T + 1) * T;  // never straddle two sequences
      }
      CASTOR_CHECK(n <= INT32_MAX, file, ": segment ", i, " is too long");
      s.seg_start[size_t(i)] = pos;
      s.seg_positions[size_t(i)] = static_cast<int32_t>(n);
      pos += n;
    }
    pos += 1;  // end-of-text
  }
  s.doc_start.back() = pos;
}

void Loader::read_window(int64_t w, int64_t row, Batch& out) const {
  const int64_t T = opts_.seq_len, a = w * T, end = a + T + 1;  // positions [a, end)
  thread_local Scratch sc;
  auto& [kind, no_loss, scratch_u8, prompted, token, docpos, docnum, scratch_tok, segbeg, scratch_f, pieces] = sc;
  kind.assign(size_t(T + 1), uint8_t(Modality::pad));
  prompted.assign(size_t(T + 1), 0);
  segbeg.resize(size_t(T + 1));
  for (int64_t t = 0; t <= T; ++t) segbeg[size_t(t)] = int32_t(std::min(t, T - 1));
  no_loss.assign(size_t(T + 1), 1);
  token.assign(size_t(T + 1), eot_);
  docpos.assign(size_t(T + 1), 0);
  docnum.assign(size_t(T + 1), -1);
  int32_t row_doc = 0;

  size_t si = size_t(std::upper_bound(shard_start_.begin(), shard_start_.end(), a) - shard_start_.begin() - 1);
  for (; si < shards_.size() && shard_start_[si] < end; ++si) {
    const Shard& s = *shards_[si];
    const ShardReader& r = *s.reader;
    const auto& segs = r.segments();
    const auto& seg_off = r.segment_offsets();
    const int64_t D = r.num_documents();
    int64_t d = std::upper_bound(s.doc_start.begin(), s.doc_start.end() - 1, a) - s.doc_start.begin() - 1;
    pieces.clear();
    for (d = std::max<int64_t>(d, 0); d < D && s.doc_start[size_t(d)] < end; ++d) {
      const int64_t d0 = s.doc_start[size_t(d)], d1 = s.doc_start[size_t(d) + 1];
      bool has_prompt = false;  // supervised fine-tuning data: its targets count as "align"
      for (int64_t i = seg_off[size_t(d)]; i < seg_off[size_t(d) + 1]; ++i)
        has_prompt = has_prompt || (segs[size_t(i)].kind == SegmentKind::text && (segs[size_t(i)].flags & kSegmentNoLoss));
      if (has_prompt)
        for (int64_t p = std::max(d0, a); p < std::min(d1, end); ++p) prompted[size_t(p - a)] = 1;
      for (int64_t i = seg_off[size_t(d)]; i < seg_off[size_t(d) + 1]; ++i) {
        const SegmentInfo& seg = segs[size_t(i)];
        const int64_t p0 = s.seg_start[size_t(i)], n = s.seg_positions[size_t(i)];
        if (p0 >= end) break;
        if (p0 + n <= a) continue;
        const int64_t lo = std::max(p0, a), hi = std::min(p0 + n, end);
        for (int64_t p = lo; p < hi; ++p) segbeg[size_t(p - a)] = int32_t(lo - a);
        if (seg.kind == SegmentKind::text) {
          pieces.push_back({seg.start + (lo - p0), hi - lo, lo - a, (seg.flags & kSegmentNoLoss) != 0});
          std::fill(kind.begin() + (lo - a), kind.begin() + (hi - a), uint8_t(Modality::text));
          continue;
        }
        const Modality m = seg.kind == SegmentKind::image ? Modality::image : Modality::audio;
        std::fill(kind.begin() + (lo - a), kind.begin() + (hi - a), uint8_t(m));
        if (p0 < a || p0 >= a + T) continue;  // only the target slot: no data needed
        const int64_t t0 = row * T + (p0 - a);
        if (m == Modality::image) {
          const auto shape = r.image_shape(seg.start);
          const int64_t H = shape[0], W = shape[1], C = shape[2], P = opts_.image_patch, gw = W / P;
          scratch_u8.resize(size_t(H * W * C));
          r.read_image(seg.start, scratch_u8.data());
          out.patch_dim = P * P * C;
          const size_t base = out.patches.size();
          out.patches.resize(base + size_t(n * P * P * C));
          float* dst = out.patches.data() + base;
          for (int64_t k = 0; k < n; ++k) {
            const int64_t gy = k / gw, gx = k % gw;
            for (int64_t py = 0; py < P; ++py) {
              const uint8_t* src = scratch_u8.data() + ((gy * P + py) * W + gx * P) * C;
              for (int64_t j = 0; j < P * C; ++j) *dst++ = float(src[j]) * (1.0f / 255.0f);
            }
            out.patch_pos.push_back(int32_t(t0 + k));
            out.patch_grid.push_back(int32_t(gy));
            out.patch_grid.push_back(int32_t(gx));
          }
        } else {
          const int64_t F = r.audio_frames(seg.start), K = opts_.audio_stack;
          scratch_f.resize(size_t(F * n_mels_));
          r.read_audio(seg.start, scratch_f.data());
          out.frame_dim = K * n_mels_;
          const size_t base = out.frames.size();
          out.frames.resize(base + size_t(n * K * n_mels_));  // value-initialised: zeros past the clip
          std::copy(scratch_f.begin(), scratch_f.end(), out.frames.begin() + std::ptrdiff_t(base));
          for (int64_t k = 0; k < n; ++k) out.frame_pos.push_back(int32_t(t0 + k));
        }
        if (seg.pair >= 0) {
          const int64_t q0 = s.seg_start[size_t(seg.pair)], qn = s.seg_positions[size_t(seg.pair)];
          if (qn > 0 && q0 >= a && q0 + qn <= a + T)
            out.pairs.push_back({int32_t(row), m, int32_t(p0 - a), int32_t(p0 - a + n), int32_t(q0 - a),
                                 int32_t(q0 - a + qn)});
        }
      }
      const int64_t eot = d1 - 1;
      if (eot >= a && eot < end) {
        kind[size_t(eot - a)] = uint8_t(Modality::text);
        no_loss[size_t(eot - a)] = 0;
      }
      for (int64_t p = std::max(d0, a); p < std::min(d1, end); ++p) {
        if (kind[size_t(p - a)] == uint8_t(Modality::pad)) continue;
        docnum[size_t(p - a)] = row_doc;
        docpos[size_t(p - a)] = int32_t(p - d0);
      }
      ++row_doc;
    }
    if (pieces.empty()) continue;
    // Consecutive documents' tokens are contiguous in /text/tokens: one read per shard.
    const int64_t t_lo = pieces.front().token, t_hi = pieces.back().token + pieces.back().count;
    scratch_tok.resize(size_t(t_hi - t_lo));
    r.read_tokens(t_lo, t_hi - t_lo, scratch_tok.data());
    for (const Piece& p : pieces) {
      for (int64_t j = 0; j < p.count; ++j) {
        const size_t dst = size_t(p.dest + j);
        token[dst] = scratch_tok[size_t(p.token - t_lo + j)];
        no_loss[dst] = p.no_loss ? 1 : 0;
      }
    }
  }

  for (int64_t t = 0; t < T; ++t) {
    const size_t o = size_t(row * T + t), i = size_t(t);
    out.ids[o] = kind[i] == uint8_t(Modality::text) ? token[i] : eot_;
    out.targets[o] = kind[i + 1] == uint8_t(Modality::text) && !no_loss[i + 1] ? token[i + 1] : -1;
    out.modality[o] = kind[i];
    out.position[o] = docpos[i];
    out.doc[o] = docnum[i];
    out.segment_begin[o] = segbeg[i];
    out.align[o] = out.targets[o] >= 0 && prompted[i + 1] ? 1 : 0;
  }
}

int64_t Loader::window_at(int64_t global) const {
  const int64_t epoch = global / n_windows_, index = global % n_windows_;
  if (!opts_.shuffle) return index;
  std::lock_guard<std::mutex> lock(order_mu_);
  for (const auto& [e, order] : orders_)
    if (e == epoch) return order[size_t(index)];
  std::vector<int64_t> order(static_cast<size_t>(n_windows_));
  for (int64_t i = 0; i < n_windows_; ++i) order[size_t(i)] = i;
  // Fisher-Yates with our own index draw so the order is the same on every platform.
  std::mt19937_64 gen(opts_.seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (int64_t i = n_windows_ - 1; i > 0; --i) {
    const int64_t j = int64_t(gen() % uint64_t(i + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  if (orders_.size() >= 2) orders_.erase(orders_.begin());
  orders_.emplace_back(epoch, std::move(order));
  return orders_.back().second[size_t(index)];
}

void Loader::make_batch(int64_t first_global, Batch& b) const {
  const int64_t B = opts_.batch_size, T = opts_.seq_len;
  b.B = B;
  b.T = T;
  // resize / clear keep the capacity of a recycled batch: no allocation in steady state.
  b.ids.resize(size_t(B * T));
  b.targets.resize(size_t(B * T));
  b.modality.resize(size_t(B * T));
  b.position.resize(size_t(B * T));
  b.doc.resize(size_t(B * T));
  b.segment_begin.resize(size_t(B * T));
  b.align.resize(size_t(B * T));
  b.sample.resize(size_t(B));
  b.patch_dim = b.frame_dim = 0;
  b.patches.clear();
  b.patch_pos.clear();
  b.patch_grid.clear();
  b.frames.clear();
  b.frame_pos.clear();
  b.pairs.clear();
  for (int64_t row = 0; row < B; ++row) {
    read_window(window_at(first_global + row), row, b);
    b.sample[size_t(row)] = first_global + row;  // the global sample, not the window: epochs differ
  }
}

void Loader::next(Batch& out) {
  if (failed_) std::rethrow_exception(failed_);
  const int64_t global = cursor_.epoch * n_windows_ + cursor_.index;
  if (opts_.prefetch == 0) {
    make_batch(global + opts_.dp_rank * opts_.batch_size, out);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    Ready ready = std::move(queue_.front());
    queue_.pop_front();
    if (ready.error) {
      failed_ = ready.error;  // the worker has stopped: every later call raises it too
      std::rethrow_exception(failed_);
    }
    std::swap(out, ready.batch);
    spare_.push_back(std::move(ready.batch));  // the caller's old buffers, for the worker
    lock.unlock();
    cv_.notify_all();
  }
  const int64_t after = global + opts_.dp_size * opts_.batch_size;
  cursor_ = {after / n_windows_, after % n_windows_};
}

void Loader::set_cursor(const LoaderCursor& c) {
  CASTOR_CHECK(c.epoch >= 0 && c.index >= 0 && c.index <= n_windows_, "loader cursor (epoch ", c.epoch, ", index ",
               c.index, ") does not fit this corpus of ", n_windows_, " windows");
  stop_worker();
  failed_ = nullptr;
  const int64_t global = c.epoch * n_windows_ + c.index;
  cursor_ = {global / n_windows_, global % n_windows_};
  if (opts_.prefetch > 0) start_worker();
}

void Loader::start_worker() {
  queue_.clear();
  stop_ = false;
  produce_next_ = cursor_.epoch * n_windows_ + cursor_.index;
  worker_ = std::thread([this] {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || int64_t(queue_.size()) < opts_.prefetch; });
        if (stop_) return;
      }
      Ready ready;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!spare_.empty()) {
          ready.batch = std::move(spare_.back());
          spare_.pop_back();
        }
      }
      try {
        make_batch(produce_next_ + opts_.dp_rank * opts_.batch_size, ready.batch);
      } catch (...) {
        ready.error = std::current_exception();
      }
      produce_next_ += opts_.dp_size * opts_.batch_size;
      const bool failed = ready.error != nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(ready));
      }
      cv_.notify_all();
      if (failed) return;  // the consumer rethrows; nothing after a failure is valid
    }
  });
}

void Loader::stop_worker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  queue_.clear();
}

}  // namespace castor::io
