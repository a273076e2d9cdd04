// Tests of io/shard.h: writer/reader round trips (uint16 and int32 token storage, gzip,
// empty documents, ranges across chunks), the temporary-file protocol, and garbage shards
// crafted with io/hdf5.h, each rejected with a castor::Error naming file and dataset.
#include "io/shard.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/testing.h"

namespace castor::io {
namespace {

namespace fs = std::filesystem;
using castor::testing::error_of;
using castor::testing::TempDirTest;
using castor::testing::truncated_copy;

class ShardTest : public TempDirTest {};

// Deterministic documents of varying length (some empty) with ids below vocab.
std::vector<std::vector<int32_t>> make_docs(int n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> docs(static_cast<size_t>(n));
  for (int d = 0; d < n; ++d) {
    const size_t len = d % 5 == 3 ? 0 : rng() % 40 + 1;
    for (size_t i = 0; i < len; ++i) docs[static_cast<size_t>(d)].push_back(static_cast<int32_t>(rng() % vocab));
  }
  return docs;
}

void write_shard(const std::string& path, const std::vector<std::vector<int32_t>>& docs, int64_t vocab, int32_t eot,
                 ShardWriterOptions opts = {}) {
  ShardWriter w(path, "gpt2", vocab, eot, std::move(opts));
  for (const auto& d : docs) w.add_document(d);
  w.close();
}

void check_round_trip(const std::string& path, const std::vector<std::vector<int32_t>>& docs, int64_t vocab,
                      int32_t eot) {
  ShardReader r(path);
  EXPECT_EQ(r.path(), path);
  EXPECT_EQ(r.schema_version(), "1.1");
  EXPECT_EQ(r.tokenizer(), "gpt2");
  EXPECT_EQ(r.vocab_size(), vocab);
  EXPECT_EQ(r.eot_id(), eot);
  ASSERT_EQ(r.num_documents(), static_cast<int64_t>(docs.size()));
  std::vector<int32_t> all;
  std::vector<int64_t> offsets{0};
  for (const auto& d : docs) {
    all.insert(all.end(), d.begin(), d.end());
    offsets.push_back(static_cast<int64_t>(all.size()));
  }
  EXPECT_EQ(r.num_tokens(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(r.doc_offsets(), offsets);
  for (size_t d = 0; d < docs.size(); ++d) EXPECT_EQ(r.read_document(static_cast<int64_t>(d)), docs[d]);
  std::vector<int32_t> got(all.size());
  r.read_tokens(0, static_cast<int64_t>(all.size()), got.data());
  EXPECT_EQ(got, all);
  // Ranges that straddle chunk boundaries.
  for (int64_t begin = 0; begin + 23 <= static_cast<int64_t>(all.size()); begin += 11) {
    std::vector<int32_t> part(23);
    r.read_tokens(begin, 23, part.data());
    EXPECT_EQ(part, std::vector<int32_t>(all.begin() + begin, all.begin() + begin + 23));
  }
}

TEST_F(ShardTest, RoundTripUint16Tokens) {
  const std::string path = file("train-00000.h5");
  const auto docs = make_docs(50, 50257, 1);
  ShardWriterOptions opts;
  opts.chunk_tokens = 7;  // many appends and chunks
  opts.sources = {"kjv.txt", "extra.txt"};
  write_shard(path, docs, 50257, 50256, opts);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  check_round_trip(path, docs, 50257, 50256);
  EXPECT_EQ(ShardReader(path).sources(), (std::vector<std::string>{"kjv.txt", "extra.txt"}));

  // The layout promised by docs/data-format.md.
  File f = File::open_read(path);
  Group root = f.root();
  EXPECT_EQ(root.read_attr_string("castor_format"), "corpus-shard");
  EXPECT_EQ(root.read_attr_string("schema_version"), "1.1");
  EXPECT_EQ(root.read_attr_int64("num_documents"), 50);
  Dataset tokens = root.open_dataset("text/tokens");
  EXPECT_EQ(tokens.elem(), H5Elem::u16);
  EXPECT_EQ(root.open_dataset("text/doc_offsets").elem(), H5Elem::i64);
  hid_t dcpl = H5Dget_create_plist(tokens.id());
  EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
  EXPECT_EQ(H5Pget_nfilters(dcpl), 1);  // fletcher32 checksums only
  EXPECT_GE(H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, nullptr, nullptr, nullptr, 0, nullptr, nullptr), 0);
  H5Pclose(dcpl);
  // The HDF5 1.10 format: checksummed metadata (superblock version >= 2).
  H5F_info2_t info;
  ASSERT_GE(H5Fget_info2(f.id(), &info), 0);
  EXPECT_GE(info.super.version, 2u);
}

TEST_F(ShardTest, RoundTripInt32TokensWithGzip) {
  const std::string path = file("big-vocab.h5");
  auto docs = make_docs(30, 100000, 2);
  docs[0] = {99999, 65536, 65535, 0};
  ShardWriterOptions opts;
  opts.deflate_level = 5;
  opts.chunk_tokens = 64;
  write_shard(path, docs, 100000, 3, opts);
  check_round_trip(path, docs, 100000, 3);
  File f = File::open_read(path);
  Dataset tokens = f.root().open_dataset("text/tokens");
  EXPECT_EQ(tokens.elem(), H5Elem::i32);
  hid_t dcpl = H5Dget_create_plist(tokens.id());
  EXPECT_EQ(H5Pget_nfilters(dcpl), 3);  // fletcher32, shuffle, deflate
  H5Pclose(dcpl);
}

TEST_F(ShardTest, EmptyShardAndVocab65536Boundary) {
  const std::string empty = file("empty-shard.h5");
  write_shard(empty, {}, 65536, 0);
  ShardReader r(empty);
  EXPECT_EQ(r.num_documents(), 0);
  EXPECT_EQ(r.num_tokens(), 0);
  EXPECT_EQ(r.doc_offsets(), std::vector<int64_t>{0});
  EXPECT_TRUE(r.sources().empty());

  const std::string edge = file("edge.h5");
  write_shard(edge, {{65535, 0, 1}}, 65536, 65535);
  EXPECT_EQ(ShardReader(edge).read_document(0), (std::vector<int32_t>{65535, 0, 1}));
  EXPECT_EQ(File::open_read(edge).root().open_dataset("text/tokens").elem(), H5Elem::u16);
}

TEST_F(ShardTest, NothingVisibleUntilClose) {
  const std::string path = file("partial.h5");
  {
    ShardWriter w(path, "gpt2", 50257, 50256);
    w.add_document(std::vector<int32_t>{1, 2, 3});
    EXPECT_EQ(w.num_documents(), 1);
    EXPECT_EQ(w.num_tokens(), 3);
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(fs::exists(path + ".tmp"));
  }  // destroyed without close()
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  ShardWriter w(path, "gpt2", 50257, 50256);
  w.close();
  EXPECT_CONTAINS(error_of([&] { w.add_document(std::vector<int32_t>{1}); }), "after close()");
  EXPECT_CONTAINS(error_of([&] { w.close(); }), "close() called twice");
}

TEST_F(ShardTest, WriterRejectsBadInput) {
  const std::string path = file("bad-writer.h5");
  EXPECT_CONTAINS(error_of([&] { ShardWriter(path, "gpt2", 0, 0); }), path + ": vocab_size 0");
  EXPECT_CONTAINS(error_of([&] { ShardWriter(path, "gpt2", 100, 100); }), path + ": eot_id 100");
  EXPECT_CONTAINS(error_of([&] { ShardWriter(path, "", 100, 1); }), "tokenizer");
  ShardWriterOptions bad;
  bad.deflate_level = 10;
  EXPECT_CONTAINS(error_of([&] { ShardWriter(path, "gpt2", 100, 1, bad); }), "deflate level");
  ShardWriter w(path, "gpt2", 100, 1);
  w.add_document(std::vector<int32_t>{5});
  EXPECT_EQ(error_of([&] {
              w.add_document(std::vector<int32_t>{1, 2, 100});
            }),
            path + ": document 1: token id 100 at position 2 outside [0, vocab_size 100)");
  EXPECT_CONTAINS(error_of([&] { w.add_document(std::vector<int32_t>{-1}); }), "token id -1");
  w.close();  // the rejected documents left no trace
  EXPECT_EQ(ShardReader(path).num_documents(), 1);
  EXPECT_EQ(ShardReader(path).num_tokens(), 1);
}

// ---------------------------------------------------------------------------- garbage

struct RawShard {
  std::string format = "corpus-shard";
  std::string version = "1.0";
  int64_t vocab = 50257;
  int64_t eot = 50256;
  std::vector<int32_t> tokens = std::vector<int32_t>(40, 7);
  std::vector<int64_t> offsets = {0, 10, 25, 40};
  int64_t num_tokens = -1;  // -1: tokens.size()
  bool write_tokens = true;
};

// Writes a shard by hand (int32 tokens), bypassing ShardWriter's checks.
void write_raw(const std::string& path, const RawShard& s) {
  File f = File::create(path);
  Group root = f.root();
  root.write_attr_string("castor_format", s.format);
  root.write_attr_string("schema_version", s.version);
  root.write_attr_string("tokenizer", "gpt2");
  root.write_attr_int64("vocab_size", s.vocab);
  root.write_attr_int64("eot_id", s.eot);
  root.write_attr_int64("num_documents", static_cast<int64_t>(s.offsets.size()) - 1);
  root.write_attr_int64("num_tokens", s.num_tokens >= 0 ? s.num_tokens : static_cast<int64_t>(s.tokens.size()));
  if (s.write_tokens) root.write_vector<int32_t>("text/tokens", s.tokens);
  root.write_vector<int64_t>("text/doc_offsets", s.offsets);
}

TEST_F(ShardTest, RawShardBaselineIsValid) {
  const std::string path = file("raw.h5");
  write_raw(path, RawShard{});
  ShardReader r(path);
  EXPECT_EQ(r.num_documents(), 3);
  EXPECT_EQ(r.read_document(1), std::vector<int32_t>(15, 7));
}

TEST_F(ShardTest, GarbageFilesThrowNamingTheFile) {
  expect_rejects_non_hdf5([](const std::string& path) { ShardReader r(path); });

  const std::string good = file("good.h5");
  write_shard(good, make_docs(2000, 50257, 3), 50257, 50256);
  const std::string cut = file("cut.h5");
  truncated_copy(good, cut);
  const std::string msg = error_of([&] { ShardReader r(cut); });
  EXPECT_CONTAINS(msg, cut + ": cannot open HDF5 file");
  EXPECT_CONTAINS(msg, "truncated");

  // HDF5's legacy format has no metadata checksums: refused before libhdf5 parses it.
  const std::string legacy = file("legacy.h5");
  H5Fclose(H5Fcreate(legacy.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  EXPECT_CONTAINS(error_of([&] { ShardReader r(legacy); }), legacy + ": HDF5 superblock version 0");

  // A flipped byte inside a chunk of tokens fails its Fletcher-32 checksum on read.
  const std::string flipped = file("flipped.h5");
  std::filesystem::copy_file(good, flipped);
  haddr_t addr = 0;
  {
    File f = File::open_read(good);
    Dataset tokens = f.root().open_dataset("text/tokens");
    hsize_t offset[1];
    unsigned mask = 0;
    hsize_t size = 0;
    const hid_t space = H5Dget_space(tokens.id());
    const herr_t st = H5Dget_chunk_info(tokens.id(), space, 0, offset, &mask, &addr, &size);
    H5Sclose(space);
    ASSERT_GE(st, 0);
  }
  {
    std::fstream io(flipped, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(std::streamoff(addr + 10));
    char c = 0;
    io.read(&c, 1);
    c = char(c ^ 0x20);
    io.seekp(std::streamoff(addr + 10));
    io.write(&c, 1);
  }
  ShardReader r(flipped);  // metadata intact
  std::vector<int32_t> buf(100);
  EXPECT_CONTAINS(error_of([&] { r.read_tokens(0, 100, buf.data()); }), flipped + ": dataset /text/tokens: rows [0, 100)");
}

TEST_F(ShardTest, RejectsWrongFormatAndVersion) {
  const std::string other = file("other.h5");
  {
    File f = File::create(other);
    f.root().write_vector<float>("x", std::vector<float>{1});
  }
  EXPECT_EQ(error_of([&] { ShardReader r(other); }),
            other + ": attribute /castor_format: missing (not a castor corpus-shard file)");

  const std::string ckpt = file("ckpt.h5");
  RawShard s;
  s.format = "checkpoint";
  write_raw(ckpt, s);
  EXPECT_EQ(error_of([&] { ShardReader r(ckpt); }),
            ckpt + ": attribute /castor_format: expected \"corpus-shard\", found \"checkpoint\"");

  const std::string v2 = file("v2.h5");
  s = RawShard{};
  s.version = "2.0";
  write_raw(v2, s);
  EXPECT_EQ(error_of([&] { ShardReader r(v2); }),
            v2 + ": attribute /schema_version: unsupported version \"2.0\" (this build reads "
                 "corpus-shard 1.x)");

  const std::string minor = file("v1.7.h5");
  s.version = "1.7";  // a newer minor adds only what 1.0 readers may ignore
  write_raw(minor, s);
  EXPECT_EQ(ShardReader(minor).schema_version(), "1.7");

  const std::string bad = file("v-bad.h5");
  s.version = "one";
  write_raw(bad, s);
  EXPECT_CONTAINS(error_of([&] { ShardReader r(bad); }), bad + ": attribute /schema_version: malformed \"one\"");
}

TEST_F(ShardTest, RejectsBadHeaderAndDatasets) {
  RawShard s;
  s.eot = 50257;
  const std::string eot = file("eot.h5");
  write_raw(eot, s);
  EXPECT_EQ(error_of([&] { ShardReader r(eot); }), eot + ": attribute /eot_id: 50257 outside [0, vocab_size 50257)");

  s = RawShard{};
  s.write_tokens = false;
  const std::string no_tokens = file("no-tokens.h5");
  write_raw(no_tokens, s);
  EXPECT_EQ(error_of([&] { ShardReader r(no_tokens); }), no_tokens + ": dataset /text/tokens not found");

  s = RawShard{};
  s.num_tokens = 41;
  s.offsets = {0, 10, 25, 41};
  const std::string count = file("count.h5");
  write_raw(count, s);
  EXPECT_EQ(error_of([&] { ShardReader r(count); }),
            count + ": dataset /text/tokens: has 40 tokens, attribute /num_tokens says 41");

  const std::string floats = file("floats.h5");
  {
    File f = File::create(floats);
    Group root = f.root();
    write_castor_header(root, "corpus-shard", "1.0");
    root.write_attr_string("tokenizer", "gpt2");
    root.write_attr_int64("vocab_size", 10);
    root.write_attr_int64("eot_id", 0);
    root.write_attr_int64("num_documents", 1);
    root.write_attr_int64("num_tokens", 2);
    root.write_vector<float>("text/tokens", std::vector<float>{1, 2});
    root.write_vector<int64_t>("text/doc_offsets", std::vector<int64_t>{0, 2});
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(floats); }),
                  floats + ": dataset /text/tokens: token ids must be integers");

  const std::string no_attr = file("no-vocab.h5");
  {
    File f = File::create(no_attr);
    Group root = f.root();
    write_castor_header(root, "corpus-shard", "1.0");
    root.write_attr_string("tokenizer", "gpt2");
  }
  EXPECT_EQ(error_of([&] { ShardReader r(no_attr); }), no_attr + ": attribute /vocab_size: missing");
}

TEST_F(ShardTest, RejectsBadOffsets) {
  RawShard s;
  s.offsets = {0, 25, 10, 40};
  const std::string not_monotone = file("not-monotone.h5");
  write_raw(not_monotone, s);
  EXPECT_EQ(error_of([&] { ShardReader r(not_monotone); }),
            not_monotone +
                ": dataset /text/doc_offsets: offsets not monotone: offset[2] = 10 < "
                "offset[1] = 25");

  s.offsets = {0, 10, 55, 40};
  const std::string beyond = file("beyond.h5");
  write_raw(beyond, s);
  EXPECT_EQ(error_of([&] { ShardReader r(beyond); }),
            beyond + ": dataset /text/doc_offsets: offset[2] = 55 outside [0, num_tokens 40]");

  s.offsets = {0, 10, 30};
  const std::string short_last = file("short-last.h5");
  write_raw(short_last, s);
  EXPECT_EQ(error_of([&] { ShardReader r(short_last); }),
            short_last + ": dataset /text/doc_offsets: last offset 30 != num_tokens 40");

  s.offsets = {5, 10, 40};
  const std::string first = file("first.h5");
  write_raw(first, s);
  EXPECT_EQ(error_of([&] { ShardReader r(first); }), first + ": dataset /text/doc_offsets: offset[0] = 5, expected 0");

  // num_documents disagreeing with the offsets' length.
  const std::string len = file("len.h5");
  write_raw(len, RawShard{});
  {
    File f = File::open_rw(len);
    f.root().write_attr_int64("num_documents", 7);
  }
  EXPECT_EQ(error_of([&] { ShardReader r(len); }),
            len + ": dataset /text/doc_offsets: has 4 entries, expected 7 + 1");
}

TEST_F(ShardTest, TokenIdsValidatedOnRead) {
  RawShard s;
  s.tokens[17] = 60000;
  s.tokens[30] = -4;
  const std::string path = file("bad-ids.h5");
  write_raw(path, s);
  ShardReader r(path);  // opening does not read tokens
  std::vector<int32_t> out(40);
  r.read_tokens(0, 17, out.data());  // the clean prefix is fine
  EXPECT_EQ(error_of([&] { r.read_tokens(10, 10, out.data()); }),
            path + ": dataset /text/tokens: id 60000 >= vocab_size 50257 at index 17");
  EXPECT_EQ(error_of([&] { r.read_document(2); }), path + ": dataset /text/tokens: id -4 < 0 at index 30");
  EXPECT_CONTAINS(error_of([&] { r.read_tokens(35, 10, out.data()); }),
                  path + ": dataset /text/tokens: rows [35, 45) outside [0, 40)");
  EXPECT_CONTAINS(error_of([&] { r.read_document(3); }), path + ": document 3 outside [0, 3)");
}

TEST_F(ShardTest, ConcurrentReadsFromThreads) {
  // The loader reads on a prefetch thread; HDF5 is built thread-safe and errors stay
  // per thread.
  const std::string path = file("threads.h5");
  const auto docs = make_docs(400, 50257, 4);
  write_shard(path, docs, 50257, 50256);
  ShardReader r(path);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) {
        const int64_t d = (t * 97 + rep * 13) % r.num_documents();
        if (r.read_document(d) != docs[static_cast<size_t>(d)]) return;
        try {
          std::vector<int32_t> buf(2);
          r.read_tokens(r.num_tokens() - 1, 2, buf.data());
          return;
        } catch (const Error&) {
        }
      }
      ok[static_cast<size_t>(t)] = 1;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 1));
}

}  // namespace
}  // namespace castor::io
