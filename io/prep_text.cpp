// prep text: stream documents from text / JSON lines files, tokenize batches of them in
// parallel (OpenMP), and append them in input order to shards of bounded size.
#include "io/prep_text.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "io/json_lite.h"
#include "io/shard.h"
#include "io/tokenizer.h"

namespace castor::io {
namespace {

using Clock = std::chrono::steady_clock;

// Reads documents one at a time from the configured inputs.
class DocumentReader {
 public:
  explicit DocumentReader(const PrepTextConfig& cfg) : cfg_(cfg) {}

  // Next non-empty document; false at the end of all inputs.
  bool next(std::string& doc) {
    while (true) {
      if (!in_.is_open()) {
        if (file_ >= cfg_.inputs.size()) return false;
        open(cfg_.inputs[file_]);
      }
      if (read_one(doc)) return true;
      in_.close();
      ++file_;
    }
  }
  int64_t bytes() const { return bytes_; }

 private:
  void open(const std::string& path) {
    in_.open(path, std::ios::binary);
    CASTOR_CHECK(in_.good(), path, ": cannot open input file");
    path_ = path;
    line_no_ = 0;
    jsonl_ = cfg_.format == "jsonl" ||
             (cfg_.format == "auto" && std::filesystem::path(path).extension() == ".jsonl");
  }

  bool read_one(std::string& doc) {
    doc.clear();
    std::string line;
    if (jsonl_) {
      while (std::getline(in_, line)) {
        ++line_no_;
        bytes_ += int64_t(line.size()) + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        auto text = parse_json_string_field(line, cfg_.jsonl_key, cat(path_, ":", line_no_));
        CASTOR_CHECK(text.has_value(), path_, ":", line_no_, ": no string field \"", cfg_.jsonl_key, "\"");
        if (text->empty()) continue;
        doc = std::move(*text);
        return true;
      }
      return false;
    }
    if (cfg_.doc_boundary == "file") {
      while (std::getline(in_, line)) {
        bytes_ += int64_t(line.size()) + 1;
        doc += line;
        doc += '\n';
      }
      return !doc.empty();
    }
    while (std::getline(in_, line)) {
      bytes_ += int64_t(line.size()) + 1;
      const bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
      if (cfg_.doc_boundary == "line") {
        if (blank) continue;
        doc = line;
        return true;
      }
      if (blank) {
        if (!doc.empty()) return true;
        continue;
      }
      doc += line;
      doc += '\n';
    }
    return !doc.empty();
  }

  const PrepTextConfig& cfg_;
  std::ifstream in_;
  std::string path_;
  size_t file_ = 0;
  int64_t line_no_ = 0, bytes_ = 0;
  bool jsonl_ = false;
};

std::string shard_name(const PrepTextConfig& cfg, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof(name), "-%05lld.h5", static_cast<long long>(index));
  return cfg.out_dir + "/" + cfg.prefix + name;
}

}  // namespace

void PrepTextConfig::validate() const {
  CASTOR_CHECK(!inputs.empty(), "--input: at least one input file is required");
  CASTOR_CHECK(!out_dir.empty(), "--out: an output directory is required");
  CASTOR_CHECK(format == "auto" || format == "text" || format == "jsonl",
               "--format must be auto, text or jsonl (got '", format, "')");
  CASTOR_CHECK(doc_boundary == "blank" || doc_boundary == "line" || doc_boundary == "file",
               "--doc-boundary must be blank, line or file (got '", doc_boundary, "')");
  CASTOR_CHECK(shard_tokens > 0, "--shard-tokens must be positive (got ", shard_tokens, ")");
  CASTOR_CHECK(!prefix.empty() && prefix.find('/') == std::string::npos, "--prefix must be a plain file name prefix");
  for (const auto& in : inputs) CASTOR_CHECK(std::filesystem::is_regular_file(in), in, ": no such input file");
}

PrepStats prep_text(const PrepTextConfig& cfg) {
  cfg.validate();
  const auto t0 = Clock::now();
  auto tok = make_tokenizer(cfg.tokenizer, cfg.data_dir.empty() ? default_data_dir() : cfg.data_dir);
  std::filesystem::create_directories(cfg.out_dir);
  DocumentReader reader(cfg);
  PrepStats stats;
  std::unique_ptr<ShardWriter> writer;
  int64_t shard_tokens = 0;
  const bool tty = isatty(fileno(stderr));
  auto last_report = Clock::now();

  constexpr size_t kBatch = 1024;
  std::vector<std::string> docs;
  std::vector<std::vector<int32_t>> ids;
  bool more = true;
  while (more) {
    docs.clear();
    std::string doc;
    while (docs.size() < kBatch && (more = reader.next(doc))) docs.push_back(std::move(doc));
    ids.assign(docs.size(), {});
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < docs.size(); ++i) ids[i] = tok->encode(docs[i]);
    for (const auto& d : ids) {
      if (!writer || shard_tokens >= cfg.shard_tokens) {
        if (writer) writer->close();
        writer = std::make_unique<ShardWriter>(shard_name(cfg, stats.shards), tok->name(), tok->vocab_size(),
                                               tok->eot_id());
        ++stats.shards;
        shard_tokens = 0;
      }
      writer->add_document(d);
      shard_tokens += int64_t(d.size());
      stats.tokens += int64_t(d.size());
      ++stats.documents;
    }
    const double since = std::chrono::duration<double>(Clock::now() - last_report).count();
    if (cfg.progress && (tty ? since > 0.2 : since > 5.0)) {
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      std::fprintf(stderr, tty ? "\rprep text: %lld docs, %lld tokens, %.1f MB read, %.0f tokens/s   "
                               : "prep text: %lld docs, %lld tokens, %.1f MB read, %.0f tokens/s\n",
                   static_cast<long long>(stats.documents), static_cast<long long>(stats.tokens),
                   double(reader.bytes()) / 1e6, double(stats.tokens) / s);
      last_report = Clock::now();
    }
  }
  if (cfg.progress && tty) std::fprintf(stderr, "\n");
  CASTOR_CHECK(writer != nullptr, "--input: no documents found in ", cfg.inputs.front(),
               cfg.inputs.size() > 1 ? " and the other inputs" : "");
  writer->close();
  stats.bytes = reader.bytes();
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return stats;
}

}  // namespace castor::io
