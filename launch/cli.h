// The castor command line: subcommand dispatch and the top-level error handler.
#pragma once

namespace castor::launch {

// Runs `castor <command> [options]`; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace castor::launch
