// Option parsing (Boost.Program_options lives only in launch/): an INI config file plus
// --section.key overrides, mapped onto the typed configs of core/. Every option has a
// default shown by --help; unknown options and bad values are one-line errors.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"

namespace castor::launch {

struct TrainOptions {
  ModelConfig model;
  OptimConfig optim;
  TrainConfig train;
};

// Parses `castor train` arguments (argv[0] is the subcommand). Returns false when
// --help was printed (to stdout) and the caller should exit 0.
bool parse_train_options(const std::vector<std::string>& args, TrainOptions& out);

// Shortest round-trip text of a float default, for --help.
std::string format_default(double v);

}  // namespace castor::launch
