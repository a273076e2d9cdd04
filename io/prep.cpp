// The parts of castor prep shared by every pipeline: output validation, the ordered
// parallel map, and ShardSink (shard rotation, progress lines, the final summary).
#include "io/prep.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>

#include "core/error.h"

namespace castor::io {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string shard_name(const PrepOutput& out, int64_t index) {
  char name[32];
  std::snprintf(name, sizeof(name), "-%05lld.h5", static_cast<long long>(index));
  return out.out_dir + "/" + out.prefix + name;
}

}  // namespace

void PrepOutput::validate() const {
  CASTOR_CHECK(!out_dir.empty(), "--out: an output directory is required");
  CASTOR_CHECK(!prefix.empty() && prefix.find('/') == std::string::npos, "--prefix must be a plain file name prefix");
  CASTOR_CHECK(shard_mb > 0, "--shard-size must be positive (got ", shard_mb, ")");
  CASTOR_CHECK(deflate >= 0 && deflate <= 9, "--deflate must be 0..9 (got ", deflate, ")");
  (void)parse_split(split);
}

std::string PrepStats::summary(const std::string& pipeline, const std::string& out_dir) const {
  std::string s = cat("prep ", pipeline, ": ", documents, " documents, ", tokens, " tokens");
  if (images > 0) s += cat(", ", images, " images");
  if (audio_clips > 0) s += cat(", ", audio_clips, " audio clips (", audio_seconds, " s)");
  char rate[160];
  std::snprintf(rate, sizeof(rate), " -> %lld shards in %s (%.1f MB in, %.1f MB out, %.2f s, %.1f MB/s of input)",
                static_cast<long long>(shards), out_dir.c_str(), double(input_bytes) / 1e6,
                double(output_bytes) / 1e6, seconds, double(input_bytes) / 1e6 / std::max(seconds, 1e-9));
  return s + rate;
}

std::unique_ptr<Tokenizer> prep_tokenizer(const std::string& name, const std::string& data_dir) {
  return make_tokenizer(name, data_dir.empty() ? default_data_dir() : data_dir);
}

SegmentData text_segment(const Tokenizer& tok, const std::string& text, uint8_t flags) {
  SegmentData s;
  s.kind = SegmentKind::text;
  s.tokens = tok.encode(text);
  s.flags = flags;
  return s;
}

void parallel_ordered(int64_t n, const std::function<DocumentData(int64_t)>& make,
                      const std::function<void(int64_t, DocumentData&&)>& take) {
  const int64_t batch = std::max<int64_t>(64, 16 * omp_get_max_threads());
  std::vector<DocumentData> docs;
  std::vector<std::exception_ptr> errors;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t m = std::min(batch, n - b0);
    docs.assign(size_t(m), {});
    errors.assign(size_t(m), nullptr);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < m; ++i) {
      try {
        docs[size_t(i)] = make(b0 + i);
      } catch (...) {
        errors[size_t(i)] = std::current_exception();
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      if (errors[size_t(i)]) std::rethrow_exception(errors[size_t(i)]);
      take(b0 + i, std::move(docs[size_t(i)]));
    }
  }
}

// ---------------------------------------------------------------------------- ShardSink

ShardSink::ShardSink(const PrepOutput& out, std::string pipeline, const Tokenizer& tok,
                     std::vector<std::string> sources, std::optional<LogMelConfig> audio, bool audio_f16)
    : out_(out), pipeline_(std::move(pipeline)), tok_(tok) {
  out_.validate();
  wopts_.deflate_level = out_.deflate;
  wopts_.sources = std::move(sources);
  wopts_.audio = audio;
  wopts_.audio_f16 = audio_f16;
  std::filesystem::create_directories(out_.out_dir);
  // Shards left by an earlier run would silently join this one's (the loader reads every
  // *.h5 of a directory): refuse, or remove them when asked to.
  const std::string stem = out_.prefix + "-";
  for (const auto& e : std::filesystem::directory_iterator(out_.out_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(stem, 0) != 0 || e.path().extension() != ".h5") continue;
    CASTOR_CHECK(out_.overwrite, out_.out_dir, ": already holds shards ", out_.prefix,
                 "-*.h5 (from an earlier run); remove them, choose another --out or --prefix, or pass --overwrite");
    std::filesystem::remove(e.path());
  }
  t0_ = last_report_ = now_seconds();
  tty_ = isatty(fileno(stderr)) != 0;
}

ShardSink::~ShardSink() = default;

void ShardSink::add(const DocumentData& doc, int64_t input_bytes) {
  if (!writer_ || shard_bytes_ >= out_.shard_mb * 1e6) {
    if (writer_) writer_->close();
    writer_ = std::make_unique<ShardWriter>(shard_name(out_, stats_.shards), tok_.name(), tok_.vocab_size(),
                                            tok_.eot_id(), wopts_);
    ++stats_.shards;
    shard_bytes_ = 0.0;
  }
  writer_->add_document(doc);
  const double token_bytes = tok_.vocab_size() <= 65536 ? 2.0 : 4.0;
  const double feature_bytes = wopts_.audio_f16 ? 2.0 : 4.0;
  for (const SegmentData& s : doc.segments) {
    switch (s.kind) {
      case SegmentKind::text:
        stats_.tokens += int64_t(s.tokens.size());
        shard_bytes_ += token_bytes * double(s.tokens.size());
        break;
      case SegmentKind::image:
        ++stats_.images;
        shard_bytes_ += double(s.image.pixels.size());
        break;
      case SegmentKind::audio:
        ++stats_.audio_clips;
        stats_.audio_seconds += double(s.audio.num_samples) / double(wopts_.audio->sample_rate);
        shard_bytes_ += feature_bytes * double(s.audio.data.size());
        break;
    }
  }
  ++stats_.documents;
  stats_.input_bytes += input_bytes;
  if (out_.progress && now_seconds() - last_report_ > (tty_ ? 0.2 : 5.0)) report(false);
}

void ShardSink::report(bool final) {
  const double t = now_seconds() - t0_;
  std::fprintf(stderr, "%sprep %s: %lld docs, %lld tokens, %lld images, %lld audio clips, %.1f MB read, %.1f MB/s%s",
               tty_ ? "\r" : "", pipeline_.c_str(), static_cast<long long>(stats_.documents),
               static_cast<long long>(stats_.tokens), static_cast<long long>(stats_.images),
               static_cast<long long>(stats_.audio_clips), double(stats_.input_bytes) / 1e6,
               double(stats_.input_bytes) / 1e6 / std::max(t, 1e-9), tty_ && !final ? "   " : "\n");
  last_report_ = now_seconds();
}

PrepStats ShardSink::finish() {
  if (writer_ == nullptr) {
    std::string inputs;
    for (const auto& in : wopts_.sources) inputs += (inputs.empty() ? "" : ", ") + in;
    CASTOR_FAIL("prep ", pipeline_, ": no documents found in ", inputs.empty() ? "the inputs" : inputs);
  }
  writer_->close();
  writer_.reset();
  if (out_.progress && tty_) report(true);
  for (int64_t i = 0; i < stats_.shards; ++i) {
    std::error_code ec;
    stats_.output_bytes += int64_t(std::filesystem::file_size(shard_name(out_, i), ec));
  }
  stats_.seconds = now_seconds() - t0_;
  return stats_;
}

}  // namespace castor::io
