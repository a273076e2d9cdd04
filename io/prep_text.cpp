// prep text: stream documents from text / JSON lines files, tokenize batches of them in
// parallel, and append them in input order to shards of bounded size (io/prep.h).
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/json_lite.h"
#include "io/prep.h"

namespace castor::io {
namespace {

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
  int32_t file_index() const { return int32_t(file_); }  // input of the last document

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

}  // namespace

void PrepTextConfig::validate() const {
  CASTOR_CHECK(!inputs.empty(), "--input: at least one input file is required");
  out.validate();
  CASTOR_CHECK(format == "auto" || format == "text" || format == "jsonl",
               "--format must be auto, text or jsonl (got '", format, "')");
  CASTOR_CHECK(doc_boundary == "blank" || doc_boundary == "line" || doc_boundary == "file",
               "--doc-boundary must be blank, line or file (got '", doc_boundary, "')");
  for (const auto& in : inputs) CASTOR_CHECK(std::filesystem::is_regular_file(in), in, ": no such input file");
}

PrepStats prep_text(const PrepTextConfig& cfg) {
  cfg.validate();
  auto tok = prep_tokenizer(cfg.tokenizer, cfg.data_dir);
  ShardSink sink(cfg.out, "text", *tok, cfg.inputs);
  const Split split = parse_split(cfg.out.split);
  DocumentReader reader(cfg);
  constexpr size_t kBatch = 4096;
  std::vector<std::string> docs;
  std::vector<int32_t> sources;
  bool more = true;
  while (more) {
    docs.clear();
    sources.clear();
    std::string doc;
    int64_t bytes_before = reader.bytes();
    while (docs.size() < kBatch && (more = reader.next(doc))) {
      docs.push_back(std::move(doc));
      sources.push_back(reader.file_index());
    }
    const int64_t bytes = reader.bytes() - bytes_before;
    parallel_ordered(
        int64_t(docs.size()),
        [&](int64_t i) {
          DocumentData d;
          d.segments.push_back(text_segment(*tok, docs[size_t(i)]));
          d.source = sources[size_t(i)];
          d.split = split;
          return d;
        },
        [&](int64_t i, DocumentData&& d) { sink.add(d, i == 0 ? bytes : 0); });
  }
  return sink.finish();
}

}  // namespace castor::io
