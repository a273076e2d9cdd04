// castor: the command-line entry point. Dispatches to subcommands (train, prep,
// tokenize, ...); every error becomes one "castor: error: ..." line and a non-zero exit.
#include "launch/cli.h"

int main(int argc, char** argv) { return castor::launch::run_cli(argc, argv); }
