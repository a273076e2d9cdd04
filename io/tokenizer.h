// Text tokenizers: text bytes <-> token ids. "gpt2" is OpenAI's byte-level BPE (exactly
// GPT-2's ids, files encoder.json + vocab.bpe under <data_dir>/gpt2/); "byte" maps each byte
// to its value. encode() never emits end-of-text for ordinary text (the literal string
// "<|endoftext|>" is tokenized as text); decode() renders end-of-text as "<|endoftext|>".
// Both are immutable after construction and safe to call from several threads at once.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace castor::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;    // "gpt2" or "byte"
  virtual int32_t vocab_size() const = 0;  // 50257 for gpt2, 257 for byte (256 bytes + end-of-text)
  virtual int32_t eot_id() const = 0;      // 50256 for gpt2 (<|endoftext|>), 256 for byte
  // Ids of `text` (any bytes; invalid UTF-8 is tokenized byte by byte, never rejected).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Concatenated bytes of the tokens; throws castor::Error on an id outside [0, vocab_size).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
};

// name: "gpt2" (reads <data_dir>/gpt2/encoder.json and vocab.bpe) or "byte" (no files).
// Throws castor::Error naming the file (missing, corrupt JSON, malformed merges line) or,
// for an unknown name, listing the valid names.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& data_dir);

// The repo's data/ folder (compile definition CASTOR_DATA_DIR), overridden by the
// environment variable CASTOR_DATA_DIR when set and non-empty.
std::string default_data_dir();

std::unique_ptr<Tokenizer> make_byte_tokenizer();
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& data_dir);

// GPT-2 pre-tokenization: calls `piece` for each match of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// in order; the pieces tile `text`. Bytes that are not valid UTF-8 count as "other".
void gpt2_split(std::string_view text, const std::function<void(std::string_view)>& piece);

// Unicode classes used by the split: \p{L} letter, \p{N} number, \s white space, other.
enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };
CharClass char_class(uint32_t code_point);

}  // namespace castor::io
