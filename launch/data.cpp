// `castor data inspect|verify FILE...`: shard summaries, and a full check of every
// invariant that stops at the first violation (file, dataset and index in the message).
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "core/error.h"
#include "io/shard.h"
#include "io/shard_check.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {
namespace {

const char* kDataUsage =
    "Usage: castor data <inspect|verify> FILE|DIR ...     (castor data inspect --help)\n"
    "\n"
    "  inspect   print a summary of each shard: documents, tokens, images, audio seconds, bytes\n"
    "  verify    check every invariant of each shard (offsets, segments, token ids < vocab,\n"
    "            shapes, audio values); exits 1 at the first violation, naming file, dataset, index\n";

std::vector<std::string> parse_files(const std::vector<std::string>& args, const char* what, bool* help) {
  std::vector<std::string> inputs;
  po::options_description desc(cat("castor data ", what, ": ",
                                   std::string(what) == "inspect" ? "summarize corpus shards."
                                                                  : "check every invariant of corpus shards.",
                                   "\nUsage: castor data ", what, " FILE|DIR [FILE|DIR ...]"));
  desc.add_options()("help,h", "print this help and exit")(
      "input", po::value<std::vector<std::string>>(&inputs)->multitoken(), "shard files or directories of *.h5");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CASTOR_FAIL("castor data ", what, ": ", e.what());
  }
  *help = vm.count("help") > 0;
  if (*help) {
    std::cout << desc << "\n";
    return {};
  }
  CASTOR_CHECK(!inputs.empty(), "castor data ", what, ": give at least one shard file or directory");
  std::vector<std::string> files;
  for (const auto& in : inputs)
    for (auto& f : io::list_shards(in)) files.push_back(std::move(f));
  return files;
}

int inspect(const std::vector<std::string>& args) {
  bool help = false;
  const auto files = parse_files(args, "inspect", &help);
  if (help) return 0;
  io::ShardSummary total;
  total.path = "total";
  for (const auto& f : files) {
    const io::ShardSummary s = io::inspect_shard(f);
    std::fputs(s.format().c_str(), stdout);
    total.add(s);
  }
  if (files.size() > 1) std::printf("%s(%zu shards)\n", total.format().c_str(), files.size());
  return 0;
}

int verify(const std::vector<std::string>& args) {
  bool help = false;
  const auto files = parse_files(args, "verify", &help);
  if (help) return 0;
  const bool tty = isatty(fileno(stderr)) != 0;
  for (const auto& f : files) {
    const io::ShardSummary s = io::verify_shard(f, [&](int64_t done, int64_t all) {
      if (tty) std::fprintf(stderr, "\rverify %s: %.0f%%", f.c_str(), 100.0 * double(done) / double(std::max<int64_t>(all, 1)));
    });
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::printf("ok %s: %lld documents, %lld tokens, %lld images, %lld audio clips\n", f.c_str(),
                static_cast<long long>(s.documents), static_cast<long long>(s.tokens), static_cast<long long>(s.images),
                static_cast<long long>(s.audio_clips));
  }
  std::printf("verified %zu shards\n", files.size());
  return 0;
}

}  // namespace

int data_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kDataUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "inspect") return inspect(rest);
  if (args[0] == "verify") return verify(rest);
  CASTOR_FAIL("unknown data command '", args[0], "' (available: inspect, verify)");
}

}  // namespace castor::launch
