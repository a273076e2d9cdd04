// A tiny JSON reader for flat objects of string keys and integer values, as in GPT-2's
// encoder.json: {"key": 123, "\u0120the": 262}. Keys come back as UTF-8 (all JSON string
// escapes, \uXXXX with surrogate pairs included); anything else (nested values, fractions,
// a lone surrogate, trailing garbage) throws castor::Error naming `what` and line:column.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace castor::io {

// Entries in file order (duplicates kept; the caller decides).
std::vector<std::pair<std::string, int64_t>> parse_json_int_map(std::string_view text, std::string_view what);

}  // namespace castor::io
