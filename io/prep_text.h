// `castor prep text`: plain text or JSON lines -> tokenized HDF5 text shards (schema v1,
// docs/data-format.md). Documents are split by blank lines, by lines, or per file (text),
// or one per JSON line (its string field). Tokenization runs on all configured threads;
// output is identical for any thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace castor::io {

struct PrepTextConfig {
  std::vector<std::string> inputs;  // .txt / .jsonl files (format by extension unless set)
  std::string format = "auto";      // auto | text | jsonl
  std::string out_dir;
  std::string prefix = "shard";     // shard files <out_dir>/<prefix>-00000.h5, ...
  std::string tokenizer = "gpt2";
  std::string data_dir;             // tokenizer files; empty = default_data_dir()
  std::string doc_boundary = "blank";  // blank | line | file (text inputs)
  std::string jsonl_key = "text";
  int64_t shard_tokens = 50'000'000;   // start a new shard past this many tokens
  bool progress = true;
  void validate() const;
};

struct PrepStats {
  int64_t documents = 0, tokens = 0, bytes = 0, shards = 0;
  double seconds = 0.0;
};

PrepStats prep_text(const PrepTextConfig& cfg);

}  // namespace castor::io
