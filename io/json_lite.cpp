// A tiny JSON reader (see json_lite.h): a recursive descent over one top-level object whose
// values are read (integers, strings) or validated and skipped (anything else). Errors report
// the byte position as line:column so a corrupt file is easy to find.
#include "io/json_lite.h"

#include <cstdlib>
#include <functional>
#include <limits>

#include "core/error.h"

namespace castor::io {
namespace {

class Parser {
 public:
  Parser(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  // Calls field(key) for each member with the parser positioned at its value; field must
  // consume the value. Then checks that nothing but white space follows the object.
  void object(const std::function<void(std::string&&)>& field) {
    skip_ws();
    expect('{');
    members(field);
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters after the object");
  }

  int64_t integer() {
    bool neg = false;
    if (peek() == '-') {
      neg = true;
      ++i_;
    }
    if (peek() < '0' || peek() > '9') fail("expected an integer value");
    if (peek() == '0' && i_ + 1 < s_.size() && s_[i_ + 1] >= '0' && s_[i_ + 1] <= '9') fail("leading zero");
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      uint64_t d = static_cast<uint64_t>(s_[i_] - '0');
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - d) / 10) fail("integer out of range");
      v = v * 10 + d;
      ++i_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') fail("expected an integer value, not a fraction");
    return neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_];
      if (c == '"') {
        ++i_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character inside a string");
      if (c != '\\') {
        out += c;
        ++i_;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        // clang-format off
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        // clang-format on
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') fail("high surrogate without a low one");
            i_ += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate without a low one");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --i_;
          fail(cat("unknown escape '\\", e, "'"));
      }
    }
  }

  int peek() const { return i_ < s_.size() ? static_cast<unsigned char>(s_[i_]) : -1; }

  // Validates and skips any JSON value.
  void skip_value() { (void)value(0); }

  // Any JSON value, as a tree.
  JsonValue value(int depth) {
    if (depth > 512) fail("nesting too deep");
    skip_ws();
    const int c = peek();
    JsonValue v;
    if (c == '"') {
      v.type = JsonValue::Type::string;
      v.str = string();
    } else if (c == '{') {
      ++i_;
      v.type = JsonValue::Type::object;
      members([&](std::string&& key) { v.members.emplace_back(std::move(key), value(depth + 1)); });
    } else if (c == '[') {
      ++i_;
      v.type = JsonValue::Type::array;
      skip_ws();
      if (peek() == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.items.push_back(value(depth + 1));
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      const size_t from = i_;
      number();
      v.type = JsonValue::Type::number;
      v.num = std::strtod(std::string(s_.substr(from, i_ - from)).c_str(), nullptr);
    } else if (literal("true")) {
      v.type = JsonValue::Type::boolean;
      v.b = true;
    } else if (literal("false")) {
      v.type = JsonValue::Type::boolean;
    } else if (!literal("null")) {
      fail("expected a value");
    }
    return v;
  }

  // The whole text as one value; nothing but white space may follow it.
  JsonValue document() {
    JsonValue v = value(0);
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters after the value");
    return v;
  }

 private:
  [[noreturn]] void fail(std::string_view why) const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < i_ && k < s_.size(); ++k) {
      if (s_[k] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    CASTOR_FAIL(what_, ": invalid JSON at ", line, ":", col, ": ", why);
  }

  // After '{': the members up to and including '}'.
  void members(const std::function<void(std::string&&)>& field) {
    skip_ws();
    if (peek() == '}') {
      ++i_;
      return;
    }
    for (;;) {
      skip_ws();
      std::string key = string();
      skip_ws();
      expect(':');
      skip_ws();
      field(std::move(key));
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      return;
    }
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  void number() {
    if (peek() == '-') ++i_;
    auto digits = [&] {
      size_t from = i_;
      while (peek() >= '0' && peek() <= '9') ++i_;
      if (i_ == from) fail("bad number");
      return i_ - from;
    };
    size_t first = i_;
    if (digits() > 1 && s_[first] == '0') fail("leading zero");
    if (peek() == '.') {
      ++i_;
      digits();
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      digits();
    }
  }

  void expect(char c) {
    if (peek() != static_cast<unsigned char>(c)) {
      fail(i_ < s_.size() ? cat("expected '", c, "'") : cat("unexpected end, expected '", c, "'"));
    }
    ++i_;
  }

  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        --i_;
        fail("bad hex digit in \\u escape");
      }
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view s_;
  std::string_view what_;
  size_t i_ = 0;
};

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  const JsonValue* out = nullptr;
  for (const auto& [k, v] : members)
    if (k == key) out = &v;
  return out;
}

JsonValue parse_json(std::string_view text, std::string_view what) { return Parser(text, what).document(); }

std::vector<std::pair<std::string, int64_t>> parse_json_int_map(std::string_view text, std::string_view what) {
  std::vector<std::pair<std::string, int64_t>> out;
  Parser p(text, what);
  p.object([&](std::string&& key) { out.emplace_back(std::move(key), p.integer()); });
  return out;
}

std::optional<std::string> parse_json_string_field(std::string_view text, std::string_view key, std::string_view what) {
  std::optional<std::string> out;
  Parser p(text, what);
  p.object([&](std::string&& name) {
    if (name == key && p.peek() == '"') {
      out = p.string();
    } else {
      if (name == key) out.reset();
      p.skip_value();
    }
  });
  return out;
}

}  // namespace castor::io
