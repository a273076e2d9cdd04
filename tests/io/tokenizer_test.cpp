// Tests for io/tokenizer.h and io/json_lite.h: GPT-2 ids pinned from the Python reference
// (tests/python/gpt2_reference.py), the pre-tokenizer's pieces, round trips over varied and
// invalid UTF-8 text, thread agreement, the byte tokenizer, and clear errors for bad files,
// names and ids. Full-corpus parity with the reference lives in tests/python/test_tokenizer.py.
#include "io/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/json_lite.h"
#include "support/testing.h"

namespace castor::io {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
using castor::testing::error_of;
using castor::testing::TempDir;

const Tokenizer& gpt2() {
  static const std::unique_ptr<Tokenizer> tok = make_tokenizer("gpt2", default_data_dir());
  return *tok;
}

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> out;
  gpt2_split(text, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

// A TempDir holding an empty gpt2/ folder, the layout make_tokenizer reads.
struct TokenizerDir : TempDir {
  TokenizerDir() : TempDir("castor_tok") { fs::create_directories(path() / "gpt2"); }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Text that exercises every branch of the pre-tokenizer and many scripts.
std::vector<std::string> varied_texts() {
  return {
      "",
      "Hello world",
      "I'm here, aren't you? It's 2024! you'll they've I'd we're",
      "'s 're 'S ''s ?'s don't",
      "  leading  spaces\t\ttab\n\nnewlines  ",
      "trailing space ",
      " ",
      "\n",
      "\r\n\r\n",
      "a \tb\t c \n d",
      "h\xc3\xa9llo w\xc3\xb6rld \xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac "
      "\xd0\xba\xd0\xb8\xd1\x80\xd0\xb8\xd0\xbb\xd0\xbb\xd0\xb8\xd1\x86\xd0\xb0",
      "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6 \xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 "
      "\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa",
      "\xf0\x9f\xa4\x96\xf0\x9f\x8e\x89 emoji \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7",
      "digits 0123456789 \xd9\xa3\xd9\xa4 \xe0\xa5\xab \xe2\x85\xab \xc2\xbd\xc2\xb2",
      "nbsp\xc2\xa0"
      "here\xe3\x80\x80"
      "ideographic\xe2\x80\x83"
      "em",
      "<|endoftext|>",
      "bad\xff\xfe bytes \xe2\x82 truncated \xed\xa0\x80 surrogate \xc0\xaf overlong \xf4\x90\x80\x80 big \x80",
      std::string("nul\0inside", 10),
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      std::string(300, ' ') + "x" + std::string(200, '9') + std::string(150, '!'),
  };
}

TEST(Gpt2Tokenizer, Metadata) {
  EXPECT_EQ(gpt2().name(), "gpt2");
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eot_id(), 50256);
  const Ids eot{50256};
  EXPECT_EQ(gpt2().decode(eot), "<|endoftext|>");
}

TEST(Gpt2Tokenizer, KnownIds) {
  // Ids from OpenAI's encoder (via tests/python/gpt2_reference.py).
  EXPECT_EQ(gpt2().encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(gpt2().encode("I'm here, aren't you? It's 2024!"),
            (Ids{40, 1101, 994, 11, 3588, 470, 345, 30, 632, 338, 48609, 0}));
  EXPECT_EQ(gpt2().encode("In the beginning God created the heaven and the earth."),
            (Ids{818, 262, 3726, 1793, 2727, 262, 9538, 290, 262, 4534, 13}));
  EXPECT_EQ(gpt2().encode("a  b\t\tc\n\n"), (Ids{64, 220, 275, 197, 197, 66, 628}));
  EXPECT_EQ(gpt2().encode("you'll they've I'd we're"), (Ids{5832, 1183, 484, 1053, 314, 1549, 356, 821}));
  EXPECT_EQ(gpt2().encode("h\xc3\xa9llo w\xc3\xb6rld \xe4\xb8\xad\xe6\x96\x87"),
            (Ids{71, 2634, 18798, 266, 30570, 335, 220, 40792, 23877, 229}));
  EXPECT_EQ(gpt2().encode("\xf0\x9f\xa4\x96"), (Ids{8582, 97, 244}));
  EXPECT_EQ(gpt2().encode("12345 67"), (Ids{10163, 2231, 8275}));
  EXPECT_EQ(gpt2().encode("\xc2\xa0x"), (Ids{1849, 87}));
  EXPECT_EQ(gpt2().encode("x\xffy"), (Ids{87, 187, 88}));
  EXPECT_EQ(gpt2().encode("  "), (Ids{220, 220}));
  // The literal end-of-text string is ordinary text: never id 50256.
  EXPECT_EQ(gpt2().encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_TRUE(gpt2().encode("").empty());
}

TEST(Gpt2Tokenizer, SplitPieces) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  // \s+(?!\S): a run before a word keeps its last character for " word".
  EXPECT_EQ(split("a  b\t\tc\n\n"), (V{"a", " ", " b", "\t", "\t", "c", "\n\n"}));
  EXPECT_EQ(split("a \tb"), (V{"a", " ", "\t", "b"}));
  EXPECT_EQ(split("x   "), (V{"x", "   "}));
  EXPECT_EQ(split(" "), (V{" "}));
  EXPECT_EQ(split("don't 're"), (V{"don", "'t", " '", "re"}));
  EXPECT_EQ(split("?'s"), (V{"?'", "s"}));
  EXPECT_EQ(split("'sam"), (V{"'s", "am"}));
  EXPECT_EQ(split("abc123 456!!"), (V{"abc", "123", " 456", "!!"}));
  EXPECT_EQ(split("a\xff\xfe b"), (V{"a", "\xff\xfe", " b"}));
  EXPECT_EQ(split(" \xe2\x82"), (V{" \xe2\x82"}));
  // Non-ASCII: NBSP and U+3000 are \s, combining marks are "other", Arabic-Indic digits \p{N}.
  // Only U+0020 is the optional space before a word, so "NBSP NBSP b" ends "NBSP", "b".
  EXPECT_EQ(split("a\xc2\xa0\xc2\xa0"
                  "b"),
            (V{"a", "\xc2\xa0", "\xc2\xa0", "b"}));
  EXPECT_EQ(split("e\xcc\x81t\xd9\xa3"), (V{"e", "\xcc\x81", "t", "\xd9\xa3"}));
  for (const std::string& t : varied_texts()) {
    std::string joined;
    for (const std::string& p : split(t)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    EXPECT_EQ(joined, t);
  }
}

TEST(Gpt2Tokenizer, CharClasses) {
  EXPECT_EQ(char_class('a'), CharClass::kLetter);
  EXPECT_EQ(char_class('7'), CharClass::kNumber);
  EXPECT_EQ(char_class('\t'), CharClass::kSpace);
  EXPECT_EQ(char_class('_'), CharClass::kOther);
  EXPECT_EQ(char_class(0x1C), CharClass::kOther);      // not \s in the regex module
  EXPECT_EQ(char_class(0x00E9), CharClass::kLetter);   // é
  EXPECT_EQ(char_class(0x03A9), CharClass::kLetter);   // Ω
  EXPECT_EQ(char_class(0x0436), CharClass::kLetter);   // ж
  EXPECT_EQ(char_class(0x05E9), CharClass::kLetter);   // ש
  EXPECT_EQ(char_class(0x0643), CharClass::kLetter);   // ك
  EXPECT_EQ(char_class(0x4E2D), CharClass::kLetter);   // 中
  EXPECT_EQ(char_class(0x3042), CharClass::kLetter);   // あ
  EXPECT_EQ(char_class(0xAC00), CharClass::kLetter);   // 가
  EXPECT_EQ(char_class(0x20000), CharClass::kLetter);  // CJK extension B
  EXPECT_EQ(char_class(0x1E5D0), CharClass::kLetter);  // Ol Onal (Unicode 16)
  EXPECT_EQ(char_class(0x0663), CharClass::kNumber);   // Arabic-Indic 3
  EXPECT_EQ(char_class(0x096B), CharClass::kNumber);   // Devanagari 5
  EXPECT_EQ(char_class(0x216B), CharClass::kNumber);   // Roman numeral twelve
  EXPECT_EQ(char_class(0x00BD), CharClass::kNumber);   // ½
  EXPECT_EQ(char_class(0x00A0), CharClass::kSpace);
  EXPECT_EQ(char_class(0x3000), CharClass::kSpace);
  EXPECT_EQ(char_class(0x0301), CharClass::kOther);   // combining acute
  EXPECT_EQ(char_class(0x1F600), CharClass::kOther);  // emoji
  EXPECT_EQ(char_class(0x10FFFF), CharClass::kOther);
}

TEST(Gpt2Tokenizer, RoundTrip) {
  for (const std::string& t : varied_texts()) {
    Ids ids = gpt2().encode(t);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, gpt2().eot_id());
    }
    EXPECT_EQ(gpt2().decode(ids), t);
  }
  std::mt19937 rng(7);
  for (int n : {1, 2, 17, 100, 1000, 20000}) {
    std::string bytes(static_cast<size_t>(n), '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
    EXPECT_EQ(gpt2().decode(gpt2().encode(bytes)), bytes) << "random bytes, n=" << n;
  }
}

TEST(Gpt2Tokenizer, ThreadsAgree) {
  std::string text;
  for (const std::string& t : varied_texts()) text += t + " ";
  const Ids expected = gpt2().encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; ++rep) got[k] = gpt2().encode(text);
    });
  }
  for (auto& th : threads) th.join();
  for (const Ids& g : got) EXPECT_EQ(g, expected);
}

TEST(Gpt2Tokenizer, Speed) {
  // Pseudo-English from random syllables (~2 MB); prints the rate, asserts nothing.
  const char* syl[] = {"th", "e", "an", "d", "in", "g", "re", "st", "o", "ver", "ion", "al", "ly", "ch", "ou", "ab"};
  const char* sep[] = {" ", " ", " ", " ", ", ", ". ", ";\n", "\n\n", ": ", " 12 "};
  std::mt19937 rng(1);
  std::string text;
  while (text.size() < (2u << 20)) {
    int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) text += syl[rng() % 16];
    text += sep[rng() % 10];
  }
  auto t0 = std::chrono::steady_clock::now();
  Ids ids = gpt2().encode(text);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gpt2 encode: %zu bytes -> %zu tokens in %.3f s = %.2f M tokens/s (one thread)\n", text.size(),
              ids.size(), s, static_cast<double>(ids.size()) / s / 1e6);
  EXPECT_EQ(gpt2().decode(ids), text);
}

TEST(ByteTokenizer, RoundTripAndIds) {
  auto tok = make_tokenizer("byte", "/nonexistent");
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eot_id(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  Ids ids = tok->encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tok->decode(ids), all);
  EXPECT_EQ(tok->encode("Hi"), (Ids{72, 105}));
  const Ids eot{104, 256};
  EXPECT_EQ(tok->decode(eot), "h<|endoftext|>");
  for (const std::string& t : varied_texts()) EXPECT_EQ(tok->decode(tok->encode(t)), t);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  auto byte = make_byte_tokenizer();
  for (int32_t bad : {257, -1}) {
    const Ids ids{65, bad};
    EXPECT_NE(error_of([&] { byte->decode(ids); }).find("cannot decode id " + std::to_string(bad)), std::string::npos);
  }
  for (int32_t bad : {50257, -1, 1 << 30}) {
    const Ids ids{15496, bad};
    std::string msg = error_of([&] { gpt2().decode(ids); });
    EXPECT_NE(msg.find("cannot decode id " + std::to_string(bad)), std::string::npos) << msg;
  }
}

TEST(Tokenizer, UnknownNameListsValidOnes) {
  std::string msg = error_of([] { make_tokenizer("gpt3", default_data_dir()); });
  EXPECT_NE(msg.find("unknown tokenizer 'gpt3'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gpt2, byte"), std::string::npos) << msg;
}

TEST(Tokenizer, MissingFilesNameThePath) {
  TokenizerDir dir;
  std::string msg = error_of([&] { make_tokenizer("gpt2", dir.str()); });
  EXPECT_NE(msg.find(dir.str() + "/gpt2/encoder.json"), std::string::npos) << msg;
  msg = error_of([] { make_tokenizer("gpt2", "/nonexistent/castor"); });
  EXPECT_NE(msg.find("encoder.json"), std::string::npos) << msg;
  // encoder.json present, vocab.bpe missing.
  dir.write("gpt2/encoder.json", slurp(fs::path(default_data_dir()) / "gpt2" / "encoder.json"));
  msg = error_of([&] { make_tokenizer("gpt2", dir.str()); });
  EXPECT_NE(msg.find("vocab.bpe"), std::string::npos) << msg;
}

TEST(Tokenizer, CorruptEncoderJson) {
  const std::string bad[] = {
      "garbage", "", "{\"a\": 1", "{\"a\": 1.5}", "{\"a\": \"x\"}", "{\"a\": 0} extra", "{\"a\\q\": 0}", "[1, 2]"};
  for (const std::string& text : bad) {
    TokenizerDir dir;
    dir.write("gpt2/encoder.json", text);
    dir.write("gpt2/vocab.bpe", "#version: 0.2\n");
    std::string msg = error_of([&] { make_tokenizer("gpt2", dir.str()); });
    EXPECT_NE(msg.find(dir.str() + "/gpt2/encoder.json"), std::string::npos) << text << " -> " << msg;
  }
  // Valid JSON, but not a GPT-2 vocabulary (no byte tokens, no <|endoftext|>).
  TokenizerDir dir;
  dir.write("gpt2/encoder.json", "{\"a\": 0, \"b\": 1}");
  dir.write("gpt2/vocab.bpe", "#version: 0.2\n");
  std::string msg = error_of([&] { make_tokenizer("gpt2", dir.str()); });
  EXPECT_NE(msg.find("encoder.json"), std::string::npos) << msg;
}

TEST(Tokenizer, MalformedMergesLine) {
  const std::string encoder = slurp(fs::path(default_data_dir()) / "gpt2" / "encoder.json");
  const std::string bad[] = {"#version: 0.2\n\xc4\xa0 t\nnospace\n", "#version: 0.2\n\xc4\xa0 t\na b c\n",
                             "#version: 0.2\n\xc4\xa0 t\nzzzzqqq xxxxyy\n", "#version: 0.2\n\xc4\xa0 t\n\xc4\xa0 t\n"};
  for (const std::string& merges : bad) {
    TokenizerDir dir;
    dir.write("gpt2/encoder.json", encoder);
    dir.write("gpt2/vocab.bpe", merges);
    std::string msg = error_of([&] { make_tokenizer("gpt2", dir.str()); });
    EXPECT_NE(msg.find(dir.str() + "/gpt2/vocab.bpe:3: malformed merges line"), std::string::npos) << msg;
  }
}

TEST(JsonLite, EscapesAndSurrogatePairs) {
  auto m = parse_json_int_map(
      " {\"a\": 1, \"\\u0120the\": 262, \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\": -3,\n \"\\ud83d\\ude00\": 7, \"\xc3\xa9\": "
      "0} ",
      "t.json");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0], (std::pair<std::string, int64_t>{"a", 1}));
  EXPECT_EQ(m[1], (std::pair<std::string, int64_t>{"\xc4\xa0the", 262}));
  EXPECT_EQ(m[2], (std::pair<std::string, int64_t>{"q\"\\/\b\f\n\r\t", -3}));
  EXPECT_EQ(m[3], (std::pair<std::string, int64_t>{"\xf0\x9f\x98\x80", 7}));
  EXPECT_EQ(m[4], (std::pair<std::string, int64_t>{"\xc3\xa9", 0}));
  EXPECT_TRUE(parse_json_int_map("{}", "t.json").empty());
}

TEST(JsonLite, RejectsBadInput) {
  const std::string bad[] = {
      "{\"\\ud83d\": 1}", "{\"\\ude00\": 1}", "{\"\\u12g4\": 1}", "{\"a\": 01}",
      "{\"a\": 1,}",      "{\"a\" 1}",        "{\"a\tb\": 1}",    "{\"a\": 99999999999999999999}",
      "{\"a\": {}}",      "{\"a\": 1}}"};
  for (const std::string& text : bad) {
    std::string msg = error_of([&] { parse_json_int_map(text, "t.json"); });
    EXPECT_EQ(msg.rfind("t.json: invalid JSON at 1:", 0), 0u) << text << " -> " << msg;
  }
  std::string msg = error_of([] { parse_json_int_map("{\n\n  \"a\": x}", "f.json"); });
  EXPECT_NE(msg.find("f.json: invalid JSON at 3:8"), std::string::npos) << msg;
}

TEST(JsonLite, StringFieldOfJsonlLine) {
  const std::string line =
      "{\"id\": -1.5e+3, \"meta\": {\"text\": \"inner\", \"tags\": [1, \"x\", [], {}, true, false, null]}, "
      "\"text\": \"line\\none \\u00e9\\ud83d\\ude00\", \"n\": 0}";
  EXPECT_EQ(parse_json_string_field(line, "text", "a.jsonl:1"), "line\none \xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(parse_json_string_field(line, "absent", "a.jsonl:1"), std::nullopt);
  EXPECT_EQ(parse_json_string_field(line, "n", "a.jsonl:1"), std::nullopt);  // not a string
  EXPECT_EQ(parse_json_string_field("{\"text\": \"a\", \"text\": \"b\"}", "text", "x"), "b");
  for (const std::string bad : {"{\"text\": \"a\"", "{\"text\": tru}", "{\"x\": [1,]}", "{\"x\": 1.}", "{\"x\": -}",
                                "[\"text\"]", "{\"text\": \"a\"} {}"}) {
    std::string msg = error_of([&] { parse_json_string_field(bad, "text", "a.jsonl:7"); });
    EXPECT_EQ(msg.rfind("a.jsonl:7: invalid JSON at 1:", 0), 0u) << bad << " -> " << msg;
  }
}

}  // namespace
}  // namespace castor::io
