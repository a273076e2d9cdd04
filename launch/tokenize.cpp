// `castor tokenize`: text on stdin -> space-separated ids on stdout (or, with --decode,
// ids on stdin -> text), for inspecting a tokenizer.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "io/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {

int tokenize_command(const std::vector<std::string>& args) {
  std::string name = "gpt2", data_dir;
  po::options_description desc(
      "castor tokenize: read text on stdin and print its token ids, space-separated.\n"
      "Usage: castor tokenize [--tokenizer gpt2|byte] [--decode] < input");
  desc.add_options()("help,h", "print this help and exit")(
      "tokenizer", po::value<std::string>(&name)->default_value(name), "gpt2 or byte")(
      "data-dir", po::value<std::string>(&data_dir), "tokenizer files directory (default: the bundled data/)")(
      "decode", "read whitespace-separated ids on stdin and print the decoded text");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  auto tok = io::make_tokenizer(name, data_dir.empty() ? io::default_data_dir() : data_dir);
  std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (vm.count("decode")) {
    std::vector<int32_t> ids;
    std::istringstream in(input);
    std::string word;
    while (in >> word) {
      char* end = nullptr;
      long long v = std::strtoll(word.c_str(), &end, 10);
      CASTOR_CHECK(end && *end == '\0' && v >= 0 && v < tok->vocab_size(), "--decode: '", word,
                   "' is not a token id of ", tok->name(), " (0..", tok->vocab_size() - 1, ")");
      ids.push_back(int32_t(v));
    }
    std::string text = tok->decode(ids);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  std::vector<int32_t> ids = tok->encode(input);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace castor::launch
