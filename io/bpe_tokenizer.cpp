// The "gpt2" tokenizer: OpenAI's byte-level BPE, id for id. encode = pre-tokenize with
// GPT-2's regex (hand-written, see gpt2_split) -> per piece, start from one symbol per byte
// and repeatedly merge the lowest-ranked adjacent pair (vocab.bpe order) everywhere it
// occurs. Tokens are stored as raw bytes (bytes_to_unicode is undone at load time); merges
// are keyed by (left id, right id). Each encode() call caches its pieces' ids in a table of
// its own, so the tokenizer holds no mutable state and threads never wait on each other.
#include <array>
#include <cstdint>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/json_lite.h"
#include "io/tokenizer.h"

namespace castor::io {
namespace {

// ---- UTF-8 and the pre-tokenizer ------------------------------------------------------

struct CodePoint {
  CharClass cls;
  uint32_t len;  // bytes
};

constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (uint32_t c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      t[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      t[c] = CharClass::kNumber;
    } else if (c == ' ' || (c >= '\t' && c <= '\r')) {
      t[c] = CharClass::kSpace;
    } else {
      t[c] = CharClass::kOther;
    }
  }
  return t;
}
constexpr std::array<CharClass, 128> kAscii = make_ascii_classes();

inline bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

// Class and length of the code point at p[i] (i < n). A byte that does not start a
// well-formed UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated) is one "other".
inline CodePoint next_code_point(const unsigned char* p, size_t i, size_t n) {
  unsigned char b = p[i];
  if (b < 0x80) return {kAscii[b], 1};
  size_t left = n - i;
  uint32_t cp;
  uint32_t len;
  if (b >= 0xC2 && b <= 0xDF) {
    if (left < 2 || !is_cont(p[i + 1])) return {CharClass::kOther, 1};
    cp = ((b & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    if (left < 3 || !is_cont(p[i + 1]) || !is_cont(p[i + 2])) return {CharClass::kOther, 1};
    if (b == 0xE0 && p[i + 1] < 0xA0) return {CharClass::kOther, 1};  // overlong
    if (b == 0xED && p[i + 1] > 0x9F) return {CharClass::kOther, 1};  // surrogate
    cp = ((b & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
    len = 3;
  } else if (b >= 0xF0 && b <= 0xF4) {
    if (left < 4 || !is_cont(p[i + 1]) || !is_cont(p[i + 2]) || !is_cont(p[i + 3])) return {CharClass::kOther, 1};
    if (b == 0xF0 && p[i + 1] < 0x90) return {CharClass::kOther, 1};  // overlong
    if (b == 0xF4 && p[i + 1] > 0x8F) return {CharClass::kOther, 1};  // > U+10FFFF
    cp = ((b & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
    len = 4;
  } else {
    return {CharClass::kOther, 1};
  }
  return {char_class(cp), len};
}

// Calls emit(offset, length) for each piece of GPT-2's pattern, left to right:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The first alternative that matches at a position wins. For white space: a run that ends
// the text is one piece; a longer run followed by a non-space gives its last character to
// the next piece (\s+(?!\S) backtracks by one), which for ' ' then starts " word".
template <typename Emit>
void split_pieces(std::string_view text, Emit&& emit) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    const unsigned char b = p[i];
    if (b == '\'' && i + 1 < n) {
      const unsigned char c = p[i + 1];
      if (c == 's' || c == 't' || c == 'm' || c == 'd') {
        emit(start, 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        const unsigned char d = p[i + 2];
        if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) {
          emit(start, 3);
          i += 3;
          continue;
        }
      }
    }
    CodePoint cp = next_code_point(p, i, n);
    size_t j = i + cp.len;
    CharClass run = cp.cls;
    if (b == ' ' && j < n) {  // " ?" then a letter/number/other run
      CodePoint d = next_code_point(p, j, n);
      if (d.cls != CharClass::kSpace) {
        run = d.cls;
        j += d.len;
      }
    }
    if (run != CharClass::kSpace) {
      while (j < n) {
        CodePoint d = next_code_point(p, j, n);
        if (d.cls != run) break;
        j += d.len;
      }
      emit(start, j - start);
      i = j;
      continue;
    }
    size_t last = start;  // start of the run's last white-space character
    j = start;
    while (j < n) {
      CodePoint d = next_code_point(p, j, n);
      if (d.cls != CharClass::kSpace) break;
      last = j;
      j += d.len;
    }
    if (j < n && last > start) j = last;
    emit(start, j - start);
    i = j;
  }
}

// ---- GPT-2's byte <-> printable code point mapping ------------------------------------

// bytes_to_unicode: printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to
// themselves, the other 68 bytes to 256, 257, ... in byte order.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> m{};
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? b : 256 + extra++;
  }
  return m;
}

std::string read_file(const std::string& path, const std::string& dir) {
  std::ifstream f(path, std::ios::binary);
  CASTOR_CHECK(f.good(), "gpt2 tokenizer: cannot open ", path, " (expected GPT-2's encoder.json and vocab.bpe in ", dir,
               ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  CASTOR_CHECK(!f.bad(), "gpt2 tokenizer: cannot read ", path);
  return ss.str();
}

// Merge ranks keyed by (left id, right id): open addressing, linear probing.
class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t id = 0;  // the merged token
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  explicit MergeTable(size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected) cap *= 2;
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
  }

  // False when the pair is already present.
  bool insert(int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = pack(a, b);
    for (size_t s = slot(key);; s = (s + 1) & mask_) {
      if (slots_[s].key == key) return false;
      if (slots_[s].key == kEmpty) {
        slots_[s] = Entry{key, rank, id};
        return true;
      }
    }
  }

  const Entry* find(int32_t a, int32_t b) const {
    uint64_t key = pack(a, b);
    for (size_t s = slot(key);; s = (s + 1) & mask_) {
      if (slots_[s].key == key) return &slots_[s];
      if (slots_[s].key == kEmpty) return nullptr;
    }
  }

  int32_t rank(int32_t a, int32_t b) const {
    const Entry* e = find(a, b);
    return e ? e->rank : INT32_MAX;
  }

 private:
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }

  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// Per-call memo of the pieces of one text: piece -> where its ids already sit in the output.
// Open addressing over (hash, offset, length) into the text; no allocation per entry.
class PieceMemo {
 public:
  struct Slot {
    uint64_t hash = 0;
    size_t off = 0, len = 0;   // len == 0: empty slot
    size_t at = 0, count = 0;  // ids[at, at + count) of the output
  };

  explicit PieceMemo(std::string_view text) : text_(text) {
    size_t cap = 16;  // about one slot per 4 bytes of text to start with, grown as needed
    while (cap < 4096 && cap < text.size() / 4) cap *= 2;
    slots_.resize(cap);
    mask_ = cap - 1;
  }

  // The slot of `piece` (a substring of the text at `off`); *found tells whether it was
  // already there. A new slot must be filled (at, count) before the next call.
  Slot& lookup(size_t off, size_t len, bool* found) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    const uint64_t h = std::hash<std::string_view>{}(text_.substr(off, len));
    for (size_t s = h & mask_;; s = (s + 1) & mask_) {
      Slot& slot = slots_[s];
      if (slot.len == 0) {
        slot.hash = h;
        slot.off = off;
        slot.len = len;
        ++size_;
        *found = false;
        return slot;
      }
      if (slot.hash == h && slot.len == len && text_.compare(slot.off, len, text_, off, len) == 0) {
        *found = true;
        return slot;
      }
    }
  }

 private:
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    mask_ = slots_.size() - 1;
    for (const Slot& o : old) {
      if (o.len == 0) continue;
      size_t s = o.hash & mask_;
      while (slots_[s].len != 0) s = (s + 1) & mask_;
      slots_[s] = o;
    }
  }

  std::string_view text_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const std::string& data_dir);

  std::string name() const override { return "gpt2"; }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t eot_id() const override { return eot_id_; }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 4 + 1);
    std::vector<int32_t> sym;
    PieceMemo memo(text);
    split_pieces(text, [&](size_t off, size_t len) {
      if (len == 1) {
        ids.push_back(byte_id_[static_cast<unsigned char>(text[off])]);
        return;
      }
      bool found;
      PieceMemo::Slot& slot = memo.lookup(off, len, &found);
      if (found) {
        for (size_t k = 0; k < slot.count; ++k) {
          const int32_t id = ids[slot.at + k];
          ids.push_back(id);
        }
        return;
      }
      bpe(text.substr(off, len), sym);
      slot.at = ids.size();
      slot.count = sym.size();
      ids.insert(ids.end(), sym.begin(), sym.end());
    });
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (int32_t id : ids) {
      CASTOR_CHECK(id >= 0 && id < vocab_size(), "gpt2 tokenizer: cannot decode id ", id, " (vocabulary size ",
                   vocab_size(), ")");
      out += tokens_[static_cast<size_t>(id)];
    }
    return out;
  }

 private:
  static constexpr size_t kHeapThreshold = 64;  // pieces longer than this merge with a heap

  // BPE of one piece into `sym`. Each step finds the lowest-ranked adjacent pair and merges
  // every non-overlapping occurrence of it, left to right (the original algorithm).
  void bpe(std::string_view piece, std::vector<int32_t>& sym) const {
    sym.resize(piece.size());
    for (size_t k = 0; k < piece.size(); ++k) sym[k] = byte_id_[static_cast<unsigned char>(piece[k])];
    if (piece.size() > kHeapThreshold && heap_exact_) {
      bpe_heap(sym);
      return;
    }
    size_t m = sym.size();
    while (m > 1) {
      int32_t best = INT32_MAX;
      size_t at = 0;
      const MergeTable::Entry* merge = nullptr;
      for (size_t k = 0; k + 1 < m; ++k) {
        const MergeTable::Entry* e = merges_.find(sym[k], sym[k + 1]);
        if (e != nullptr && e->rank < best) {
          best = e->rank;
          at = k;
          merge = e;
        }
      }
      if (merge == nullptr) break;
      const int32_t first = sym[at], second = sym[at + 1];
      size_t w = at;
      for (size_t k = at; k < m;) {
        if (k + 1 < m && sym[k] == first && sym[k + 1] == second) {
          sym[w++] = merge->id;
          k += 2;
        } else {
          sym[w++] = sym[k++];
        }
      }
      m = w;
    }
    sym.resize(m);
  }

  // The same result in O(n log n) for long pieces: merge one occurrence at a time, lowest
  // rank first and leftmost among equals, over a linked list. Equal to bpe() because every
  // pair that a merge creates ranks after that merge (checked at load: heap_exact_).
  void bpe_heap(std::vector<int32_t>& sym) const {
    const int32_t n = static_cast<int32_t>(sym.size());
    std::vector<int32_t> prev(sym.size()), next(sym.size());
    for (int32_t k = 0; k < n; ++k) {
      prev[k] = k - 1;
      next[k] = k + 1 < n ? k + 1 : -1;
    }
    struct Cand {
      int32_t rank, left, right;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int32_t l) {
      if (l < 0 || next[l] < 0) return;
      int32_t r = merges_.rank(sym[l], sym[next[l]]);
      if (r != INT32_MAX) heap.push(Cand{r, l, next[l]});
    };
    for (int32_t k = 0; k + 1 < n; ++k) push(k);
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      if (sym[c.left] < 0 || next[c.left] != c.right) continue;
      const MergeTable::Entry* e = merges_.find(sym[c.left], sym[c.right]);
      if (e == nullptr || e->rank != c.rank) continue;  // stale: a symbol changed since
      sym[c.left] = e->id;
      sym[c.right] = -1;
      next[c.left] = next[c.right];
      if (next[c.left] >= 0) prev[next[c.left]] = c.left;
      push(prev[c.left]);
      push(c.left);
    }
    size_t w = 0;
    for (int32_t k = 0; k >= 0; k = next[k]) sym[w++] = sym[k];
    sym.resize(w);
  }

  std::vector<std::string> tokens_;  // id -> bytes
  std::array<int32_t, 256> byte_id_{};
  MergeTable merges_{0};
  bool heap_exact_ = false;
  int32_t eot_id_ = -1;
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& data_dir) {
  const std::string dir = data_dir + "/gpt2";
  const std::string enc_path = dir + "/encoder.json";
  const std::string bpe_path = dir + "/vocab.bpe";

  // Code point (< 512) -> byte, -1 when outside the alphabet.
  std::array<int32_t, 512> cp_to_byte;
  cp_to_byte.fill(-1);
  std::array<uint32_t, 256> b2c = byte_to_code_point();
  for (int32_t b = 0; b < 256; ++b) cp_to_byte[b2c[b]] = b;
  // GPT-2 "unicode" token text -> raw bytes; false if a character is outside the alphabet.
  auto to_bytes = [&](std::string_view s, std::string& out) {
    out.clear();
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    for (size_t i = 0; i < s.size();) {
      uint32_t cp;
      if (p[i] < 0x80) {
        cp = p[i];
        i += 1;
      } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < s.size() && is_cont(p[i + 1])) {
        cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
        i += 2;
      } else {
        return false;  // every alphabet character is below U+0200
      }
      if (cp >= cp_to_byte.size() || cp_to_byte[cp] < 0) return false;
      out += static_cast<char>(cp_to_byte[cp]);
    }
    return true;
  };

  // encoder.json: {"token": id, ...} with ids 0..n-1, each once.
  auto entries = parse_json_int_map(read_file(enc_path, dir), enc_path);
  CASTOR_CHECK(!entries.empty(), enc_path, ": no tokens");
  tokens_.assign(entries.size(), std::string());
  std::vector<bool> seen(entries.size(), false);
  std::unordered_map<std::string, int32_t> id_of;
  id_of.reserve(entries.size());
  std::string bytes;
  for (const auto& [key, id] : entries) {
    CASTOR_CHECK(id >= 0 && id < static_cast<int64_t>(entries.size()), enc_path, ": id ", id, " of token \"", key,
                 "\" is outside 0..", entries.size() - 1);
    CASTOR_CHECK(!seen[id], enc_path, ": id ", id, " appears twice");
    seen[id] = true;
    if (key == "<|endoftext|>") eot_id_ = static_cast<int32_t>(id);
    CASTOR_CHECK(to_bytes(key, bytes), enc_path, ": token \"", key, "\" has a character outside GPT-2's byte alphabet");
    CASTOR_CHECK(id_of.emplace(bytes, static_cast<int32_t>(id)).second, enc_path, ": token \"", key,
                 "\" appears twice");
    tokens_[id] = bytes;
  }
  CASTOR_CHECK(eot_id_ >= 0, enc_path, ": no <|endoftext|> token");
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, static_cast<char>(b)));
    CASTOR_CHECK(it != id_of.end(), enc_path, ": no token for byte ", b);
    byte_id_[b] = it->second;
  }

  // vocab.bpe: "#version: ..." then one merge "left right" per line, rank = line order.
  const std::string text = read_file(bpe_path, dir);
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos <= text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    lines.push_back(std::string_view(text).substr(pos, eol - pos));
    pos = eol + 1;
  }
  merges_ = MergeTable(lines.size());
  // Rank of the merge that creates each token (-1: a single byte, INT32_MAX: never made).
  std::vector<int32_t> created(tokens_.size(), INT32_MAX);
  for (int b = 0; b < 256; ++b) created[byte_id_[b]] = -1;
  heap_exact_ = true;
  int32_t rank = 0;
  std::string left, right;
  for (size_t ln = 0; ln < lines.size(); ++ln) {
    std::string_view line = lines[ln];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (ln == 0 && line.starts_with("#version"))) continue;
    size_t sp = line.find(' ');
    CASTOR_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
                     line.find(' ', sp + 1) == std::string_view::npos,
                 bpe_path, ":", ln + 1, ": malformed merges line (expected \"left right\"): \"", line, "\"");
    CASTOR_CHECK(to_bytes(line.substr(0, sp), left) && to_bytes(line.substr(sp + 1), right), bpe_path, ":", ln + 1,
                 ": malformed merges line (character outside GPT-2's byte alphabet): \"", line, "\"");
    auto a = id_of.find(left), b = id_of.find(right), ab = id_of.find(left + right);
    CASTOR_CHECK(a != id_of.end() && b != id_of.end() && ab != id_of.end(), bpe_path, ":", ln + 1,
                 ": malformed merges line (token not in encoder.json): \"", line, "\"");
    CASTOR_CHECK(merges_.insert(a->second, b->second, rank, ab->second), bpe_path, ":", ln + 1,
                 ": malformed merges line (duplicate merge): \"", line, "\"");
    if (created[ab->second] != INT32_MAX) heap_exact_ = false;  // made twice
    created[ab->second] = rank;
    if (created[a->second] >= rank || created[b->second] >= rank) heap_exact_ = false;
    ++rank;
  }
}

}  // namespace

void gpt2_split(std::string_view text, const std::function<void(std::string_view)>& piece) {
  split_pieces(text, [&](size_t off, size_t len) { piece(text.substr(off, len)); });
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& data_dir) {
  return std::make_unique<Gpt2Tokenizer>(data_dir);
}

}  // namespace castor::io
