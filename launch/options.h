// Option parsing (Boost.Program_options lives only in launch/): an INI config file plus
// --section.key overrides, mapped onto the typed configs of core/. Every option has a
// default shown by --help; unknown options and bad values are one-line errors.
#pragma once
#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "core/config.h"

namespace castor::launch {

struct TrainOptions {
  ModelConfig model;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  ParallelConfig parallel;
};

// Parses `castor train` arguments (argv[0] is the subcommand). Returns false when
// --help was printed (to stdout) and the caller should exit 0.
bool parse_train_options(const std::vector<std::string>& args, TrainOptions& out);

// Parses args against desc where a repeated option takes its last value (so overrides
// can be appended to a command line), then stores them into vm.
void store_last_wins(const std::vector<std::string>& args, const boost::program_options::options_description& desc,
                     boost::program_options::variables_map& vm);

// The whole parse of a subcommand without a config file: last value wins, --help prints
// desc to stdout and returns false, Boost errors become castor::Error.
bool parse_command_line(const std::vector<std::string>& args, const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm);

// Shortest round-trip text of a float default, for --help.
std::string format_default(double v);

}  // namespace castor::launch
