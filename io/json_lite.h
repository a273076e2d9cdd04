// A tiny JSON reader: GPT-2's encoder.json, a flat object of string keys and integer
// values ({"key": 123, "\u0120the": 262}); JSONL corpus lines (one object per line, of which
// one string field is wanted); and any value as a tree (prep mix manifests). Strings come back as UTF-8 with all
// JSON escapes decoded (\uXXXX with surrogate pairs included); malformed input (a lone
// surrogate, a fraction where an integer is due, trailing garbage...) throws castor::Error
// "<what>: invalid JSON at line:column: <why>".
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace castor::io {

struct JsonValue {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<JsonValue> items;                            // array
  std::vector<std::pair<std::string, JsonValue>> members;  // object, in text order
  const JsonValue* find(std::string_view key) const;       // last member named key, or null
};

// One JSON value (nothing else may follow it but white space).
JsonValue parse_json(std::string_view text, std::string_view what);

// {"string": integer, ...}: entries in file order (duplicates kept; the caller decides).
std::vector<std::pair<std::string, int64_t>> parse_json_int_map(std::string_view text, std::string_view what);

// The string value of top-level field `key` of the JSON object `text` (the last one if the
// key repeats); nullopt when the key is absent or its value is not a string. Other values
// (numbers, objects, arrays, true/false/null) are validated and skipped.
std::optional<std::string> parse_json_string_field(std::string_view text, std::string_view key, std::string_view what);

}  // namespace castor::io
