// `castor prep text`: options for the text pipeline of io/prep_text.h, and its summary.
#include <boost/program_options.hpp>
#include <cstdio>

#include "core/error.h"
#include "io/prep_text.h"
#include "kernels/cpu/gemm.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {

int prep_text_command(const std::vector<std::string>& args) {
  io::PrepTextConfig cfg;
  int threads = 0;
  po::options_description desc(
      "castor prep text: tokenize plain text or JSON lines into HDF5 token shards.\n"
      "Usage: castor prep text --input FILE [FILE ...] --out DIR [options]");
  desc.add_options()("help,h", "print this help and exit")(
      "input", po::value<std::vector<std::string>>(&cfg.inputs)->multitoken(), "input files (.txt or .jsonl)")(
      "out", po::value<std::string>(&cfg.out_dir), "output directory for the shards")(
      "tokenizer", po::value<std::string>(&cfg.tokenizer)->default_value(cfg.tokenizer), "gpt2 or byte")(
      "format", po::value<std::string>(&cfg.format)->default_value(cfg.format),
      "auto (by extension), text or jsonl")(
      "doc-boundary", po::value<std::string>(&cfg.doc_boundary)->default_value(cfg.doc_boundary),
      "text documents end at a blank line, every line, or the end of the file (blank|line|file)")(
      "jsonl-key", po::value<std::string>(&cfg.jsonl_key)->default_value(cfg.jsonl_key),
      "JSON lines: the string field holding the document")(
      "prefix", po::value<std::string>(&cfg.prefix)->default_value(cfg.prefix), "shard file name prefix")(
      "shard-tokens", po::value<int64_t>(&cfg.shard_tokens)->default_value(cfg.shard_tokens),
      "start a new shard after this many tokens")(
      "data-dir", po::value<std::string>(&cfg.data_dir), "tokenizer files directory (default: the bundled data/)")(
      "threads", po::value<int>(&threads)->default_value(0), "tokenizer threads; 0 = all cores")(
      "quiet", "no progress output");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  CASTOR_CHECK(threads >= 0, "--threads must be >= 0 (got ", threads, ")");
  if (threads > 0) kernels::cpu::set_num_threads(threads);
  cfg.progress = vm.count("quiet") == 0;
  const io::PrepStats s = io::prep_text(cfg);
  std::printf("prep text: %lld documents, %lld tokens, %lld shards in %s (%.1f MB of text, %.2f s, %.0f tokens/s)\n",
              static_cast<long long>(s.documents), static_cast<long long>(s.tokens), static_cast<long long>(s.shards),
              cfg.out_dir.c_str(), double(s.bytes) / 1e6, s.seconds, double(s.tokens) / std::max(s.seconds, 1e-9));
  return 0;
}

}  // namespace castor::launch
