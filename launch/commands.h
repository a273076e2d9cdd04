// The subcommands of the castor executable. Each takes its arguments (without the
// command words), prints --help on request, and returns the exit code; errors throw.
#pragma once
#include <string>
#include <vector>

namespace castor::launch {

int train_command(const std::vector<std::string>& args);     // launch/train.cpp
int prep_command(const std::vector<std::string>& args);       // launch/prep.cpp
int data_command(const std::vector<std::string>& args);       // launch/data.cpp
int tokenize_command(const std::vector<std::string>& args);  // launch/tokenize.cpp
int generate_command(const std::vector<std::string>& args);  // launch/generate.cpp
int eval_command(const std::vector<std::string>& args);      // launch/eval.cpp

}  // namespace castor::launch
