// castor prep: turn ordinary files into corpus shards (docs/data-format.md). Every
// pipeline (text, images, audio, mix) builds DocumentData items in parallel on all
// threads, in batches, and hands them in input order to a ShardSink, which writes
// <out>/<prefix>-00000.h5, ... of bounded size, prints progress and a summary. Output
// is identical for any thread count.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/audio.h"
#include "io/shard.h"
#include "io/tokenizer.h"

namespace castor::io {

// Output settings shared by all pipelines.
struct PrepOutput {
  std::string out_dir;
  std::string prefix = "shard";  // shard files <out_dir>/<prefix>-00000.h5, ...
  double shard_mb = 256.0;       // start a new shard past this many MB of payload
  int deflate = 0;               // 0 = uncompressed, 1..9 = shuffle + gzip
  bool progress = true;
  bool overwrite = false;        // remove <prefix>-*.h5 already in out_dir (else refuse)
  std::string split = "train";   // split of documents that do not name one
  void validate() const;
};

struct PrepStats {
  int64_t documents = 0, tokens = 0, images = 0, audio_clips = 0, shards = 0;
  int64_t input_bytes = 0, output_bytes = 0;
  double audio_seconds = 0.0, seconds = 0.0;
  std::string summary(const std::string& pipeline, const std::string& out_dir) const;  // one line
};

// Writes documents in order into size-bounded shards, with progress output.
class ShardSink {
 public:
  ShardSink(const PrepOutput& out, std::string pipeline, const Tokenizer& tok, std::vector<std::string> sources,
            std::optional<LogMelConfig> audio = std::nullopt, bool audio_f16 = false);
  ~ShardSink();
  void add(const DocumentData& doc, int64_t input_bytes);
  PrepStats finish();  // closes the last shard; throws if nothing was written

 private:
  void report(bool final);
  PrepOutput out_;
  std::string pipeline_;
  const Tokenizer& tok_;
  ShardWriterOptions wopts_;
  std::unique_ptr<ShardWriter> writer_;
  double shard_bytes_ = 0.0;
  PrepStats stats_;
  double t0_ = 0.0, last_report_ = 0.0;
  bool tty_ = false;
};

// Runs make(i) for i in [0, n) on all OpenMP threads, batch by batch, and passes each
// result to take(i, doc) in index order. The first error (in index order) is rethrown.
void parallel_ordered(int64_t n, const std::function<DocumentData(int64_t)>& make,
                      const std::function<void(int64_t, DocumentData&&)>& take);

// Tokenizer named by a pipeline config ("gpt2" or "byte"; data_dir empty = bundled data/).
std::unique_ptr<Tokenizer> prep_tokenizer(const std::string& name, const std::string& data_dir);

// A text segment of tokenized text.
SegmentData text_segment(const Tokenizer& tok, const std::string& text, uint8_t flags = 0);

// ------------------------------------------------------------------------- pipelines

// What every pipeline config has: the tokenizer and the output.
struct PrepBase {
  std::string tokenizer = "gpt2";
  std::string data_dir;  // tokenizer files; empty = the bundled data/
  PrepOutput out;
};

struct PrepTextConfig : PrepBase {
  std::vector<std::string> inputs;     // .txt / .jsonl files (format by extension unless set)
  std::string format = "auto";         // auto | text | jsonl
  std::string doc_boundary = "blank";  // blank | line | file (text inputs)
  std::string jsonl_key = "text";
  void validate() const;
};

// Images with captions: either IDX images + labels captioned with class names, or a TSV
// manifest of "<png path>\t<caption>" lines (paths relative to the manifest).
struct PrepImagesConfig : PrepBase {
  std::string idx_images, idx_labels, class_names;  // class_names: a file, one name per line
  std::string caption_template = "{}";              // "{}" becomes the class name
  std::string manifest;
  int64_t size = 28, channels = 1;                  // images become size x size x channels
  int64_t limit = 0;                                // 0 = every image
  void validate() const;
};

// WAV files with transcripts: a TSV manifest of "<wav path>\t<transcript>" lines.
struct PrepAudioConfig : PrepBase {
  std::string manifest;
  LogMelConfig mel;
  bool f16 = false;
  int64_t limit = 0;
  void validate() const;
};

// Interleaved documents: JSON lines manifests, one document per line (docs/data-format.md).
struct PrepMixConfig : PrepBase {
  std::vector<std::string> inputs;
  int64_t image_size = 28, channels = 1;
  LogMelConfig mel;
  bool f16 = false;
  void validate() const;
};

PrepStats prep_text(const PrepTextConfig& cfg);
PrepStats prep_images(const PrepImagesConfig& cfg);
PrepStats prep_audio(const PrepAudioConfig& cfg);
PrepStats prep_mix(const PrepMixConfig& cfg);

}  // namespace castor::io
