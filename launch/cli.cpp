// Subcommand dispatch for the castor executable, MPI session, and the one place where
// errors are caught: "castor: error: rank R: <message>", then the whole job aborts.
#include "launch/cli.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "launch/commands.h"
#include "parallel/mpi_comm.h"

namespace castor::launch {
namespace {

const char* kUsage =
    "castor: distributed training for multimodal mixture-of-experts transformers\n"
    "\n"
    "Usage: castor <command> [options]     (castor <command> --help for its options)\n"
    "\n"
    "Commands:\n"
    "  train       train a model on HDF5 token shards (under mpirun or alone)\n"
    "  prep        build HDF5 corpus shards: text, images, audio, mix (castor prep --help)\n"
    "  data        inspect or verify corpus shards (castor data --help)\n"
    "  generate    continue a prompt (text, image, audio) with a checkpoint (KV-cache sampling)\n"
    "  eval        perplexity, loss terms and media retrieval of a checkpoint on shards\n"
    "  tokenize    print the token ids of stdin (or decode ids with --decode)\n";

int dispatch(const std::vector<std::string>& words) {
  if (words.empty() || words[0] == "--help" || words[0] == "-h" || words[0] == "help") {
    std::fputs(kUsage, words.empty() ? stderr : stdout);
    return words.empty() ? 2 : 0;
  }
  const std::string& cmd = words[0];
  std::vector<std::string> rest(words.begin() + 1, words.end());
  if (cmd == "train") return train_command(rest);
  if (cmd == "tokenize") return tokenize_command(rest);
  if (cmd == "prep") return prep_command(rest);
  if (cmd == "data") return data_command(rest);
  if (cmd == "generate") return generate_command(rest);
  if (cmd == "eval") return eval_command(rest);
  CASTOR_FAIL("unknown command '", cmd, "' (available: train, prep, data, tokenize, generate, eval; see castor --help)");
}

}  // namespace

int run_cli(int argc, char** argv) {
  // Only train joins an MPI job; the other commands start instantly without MPI.
  const bool needs_mpi = argc > 1 && std::strcmp(argv[1], "train") == 0;
  std::unique_ptr<parallel::MpiSession> mpi;
  if (needs_mpi) mpi = std::make_unique<parallel::MpiSession>(&argc, &argv);
  const int rank = mpi ? mpi->world_rank() : 0;
  const int world = mpi ? mpi->world_size() : 1;
  std::vector<std::string> words(argv + 1, argv + argc);
  try {
    return dispatch(words);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor: error: rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    if (world > 1) parallel::MpiSession::abort_job(1);
    return 1;
  }
}

}  // namespace castor::launch
