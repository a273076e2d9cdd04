// Tests of the multimodal part of io/shard.h (schema 1.1) and io/shard_check.h: documents
// of text, image and audio segments round-trip with pairs, flags, splits and sources;
// float16 features; schema 1.0 files read as one text segment per document; the writer
// refuses bad documents; every table invariant broken on disk is an error naming file,
// dataset and index; verify finds bad token ids and non-finite features.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "io/shard.h"
#include "io/shard_check.h"
#include "support/testing.h"

namespace castor::io {
namespace {

using castor::testing::error_of;
using castor::testing::TempDirTest;

class ShardMultimodalTest : public TempDirTest {};

LogMelConfig small_mel() {
  LogMelConfig c;
  c.n_mels = 4;
  return c;
}

Image make_image(int64_t h, int64_t w, int64_t c, uint8_t base) {
  Image im;
  im.height = h;
  im.width = w;
  im.channels = c;
  for (int64_t i = 0; i < h * w * c; ++i) im.pixels.push_back(uint8_t(base + i));
  return im;
}

SegmentData text(std::vector<int32_t> ids, uint8_t flags = 0) {
  SegmentData s;
  s.tokens = std::move(ids);
  s.flags = flags;
  return s;
}

SegmentData image(Image im, int64_t pair = -1) {
  SegmentData s;
  s.kind = SegmentKind::image;
  s.image = std::move(im);
  s.pair = pair;
  return s;
}

SegmentData audio(int64_t frames, int64_t n_mels, float base, int64_t pair = -1) {
  SegmentData s;
  s.kind = SegmentKind::audio;
  s.audio.frames = frames;
  s.audio.num_samples = (frames - 1) * 160 + 1;  // 1 + n / hop frames
  for (int64_t i = 0; i < frames * n_mels; ++i) s.audio.data.push_back(base + 0.25f * float(i));
  s.pair = pair;
  return s;
}

// Three documents: image + caption; text, audio + transcript (prompt flagged); text only.
std::vector<DocumentData> sample_docs() {
  std::vector<DocumentData> docs(3);
  docs[0].segments = {image(make_image(4, 6, 1, 10), 1), text({5, 6, 7})};
  docs[0].source = 0;
  docs[1].segments = {text({1, 2}, kSegmentNoLoss), audio(3, 4, -2.0f, 2), text({8, 9, 10, 11})};
  docs[1].split = Split::validation;
  docs[1].source = 1;
  docs[2].segments = {text({3})};
  docs[2].split = Split::test;
  return docs;
}

std::string write_sample(const std::string& path, bool f16 = false) {
  ShardWriterOptions o;
  o.audio = small_mel();
  o.audio_f16 = f16;
  o.sources = {"a.jsonl", "b.jsonl"};
  o.chunk_tokens = 2;  // several chunks even for a few tokens
  ShardWriter w(path, "gpt2", 50257, 50256, o);
  for (const auto& d : sample_docs()) w.add_document(d);
  w.close();
  return path;
}

TEST_F(ShardMultimodalTest, RoundTripSegmentsImagesAudioAndMetadata) {
  for (bool f16 : {false, true}) {
    const std::string path = write_sample(file(f16 ? "f16.h5" : "f32.h5"), f16);
    ShardReader r(path);
    EXPECT_EQ(r.schema_version(), "1.1");
    EXPECT_EQ(r.num_documents(), 3);
    EXPECT_EQ(r.num_segments(), 6);
    EXPECT_EQ(r.num_tokens(), 10);
    EXPECT_EQ(r.segment_offsets(), (std::vector<int64_t>{0, 2, 5, 6}));
    const auto& s = r.segments();
    EXPECT_EQ(s[0].kind, SegmentKind::image);
    EXPECT_EQ(s[0].pair, 1);  // shard-global index of the caption
    EXPECT_EQ(s[1].kind, SegmentKind::text);
    EXPECT_EQ(s[1].start, 0);
    EXPECT_EQ(s[1].length, 3);
    EXPECT_EQ(s[2].flags, kSegmentNoLoss);
    EXPECT_EQ(s[3].kind, SegmentKind::audio);
    EXPECT_EQ(s[3].pair, 4);
    EXPECT_EQ(s[4].start, 5);
    EXPECT_EQ(r.read_document(1), (std::vector<int32_t>{1, 2, 8, 9, 10, 11}));
    EXPECT_EQ(r.doc_split(1), Split::validation);
    EXPECT_EQ(r.doc_split(2), Split::test);
    EXPECT_EQ(r.doc_source(0), 0);
    EXPECT_EQ(r.doc_source(2), -1);
    EXPECT_EQ(r.sources(), (std::vector<std::string>{"a.jsonl", "b.jsonl"}));

    ASSERT_EQ(r.num_images(), 1);
    EXPECT_EQ(r.image_shape(0)[0], 4);
    EXPECT_EQ(r.image_shape(0)[1], 6);
    std::vector<uint8_t> px(size_t(r.image_bytes(0)));
    r.read_image(0, px.data());
    EXPECT_EQ(px, make_image(4, 6, 1, 10).pixels);

    ASSERT_EQ(r.num_audio(), 1);
    EXPECT_EQ(r.audio_f16(), f16);
    EXPECT_EQ(r.audio_config()->n_mels, 4);
    EXPECT_EQ(r.audio_frames(0), 3);
    EXPECT_EQ(r.audio_num_samples(0), 321);
    std::vector<float> feat(12);
    r.read_audio(0, feat.data());
    for (size_t i = 0; i < feat.size(); ++i) EXPECT_EQ(feat[i], -2.0f + 0.25f * float(i));  // exact in half too

    const ShardSummary sum = verify_shard(path);
    EXPECT_EQ(sum.images, 1);
    EXPECT_EQ(sum.audio_clips, 1);
    EXPECT_DOUBLE_EQ(sum.audio_seconds, 321.0 / 16000.0);
    EXPECT_EQ(sum.split_documents, (std::array<int64_t, 3>{1, 1, 1}));
  }
}

TEST_F(ShardMultimodalTest, WriterRefusesBadDocumentsAndKeepsGoodOnes) {
  ShardWriterOptions o;
  o.sources = {"x"};
  ShardWriter w(file("w.h5"), "gpt2", 100, 99, o);
  DocumentData d;
  d.segments = {text({1, 100})};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "token id 100 at position 1 outside [0, vocab_size 100)");
  d.segments = {image(make_image(2, 2, 2, 0))};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "bad image shape 2x2x2");
  Image short_img = make_image(2, 2, 1, 0);
  short_img.pixels.pop_back();
  d.segments = {image(short_img)};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "image has 3 bytes, shape says 4");
  d.segments = {audio(2, 4, 0.0f)};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "audio segment, but the writer has no audio feature config");
  d.segments = {image(make_image(2, 2, 1, 0), 0)};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "pair 0 is not a text segment of the same document");
  d.segments = {text({1}), image(make_image(2, 2, 1, 0), 5)};
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "pair 5 is not a text segment");
  d.segments = {text({1})};
  d.source = 1;
  EXPECT_CONTAINS(error_of([&] { w.add_document(d); }), "source 1 outside [-1, 1)");
  d.source = 0;
  w.add_document(d);  // the refused documents left nothing behind
  w.close();
  ShardReader r(file("w.h5"));
  EXPECT_EQ(r.num_documents(), 1);
  EXPECT_EQ(r.num_segments(), 1);
  EXPECT_EQ(r.num_images(), 0);
}

TEST_F(ShardMultimodalTest, Schema10FilesReadAsOneTextSegmentPerDocument) {
  const std::string path = file("v10.h5");
  {
    ShardWriter w(path, "gpt2", 50257, 50256);
    w.add_document(std::vector<int32_t>{1, 2, 3});
    w.add_document(std::vector<int32_t>{});
    w.add_document(std::vector<int32_t>{4});
    w.close();
  }
  {  // strip what 1.1 added: a 1.0 writer never wrote these
    File f = File::open_rw(path);
    for (const char* g : {"/segments", "/docs", "/images"}) ASSERT_GE(H5Ldelete(f.id(), g, H5P_DEFAULT), 0);
    Group root = f.root();
    for (const char* a : {"num_segments", "num_images", "num_audio"}) ASSERT_GE(H5Adelete(root.id(), a), 0);
    write_castor_header(root, "corpus-shard", "1.0");
  }
  ShardReader r(path);
  EXPECT_EQ(r.schema_version(), "1.0");
  ASSERT_EQ(r.num_segments(), 3);
  EXPECT_EQ(r.segments()[2].start, 3);
  EXPECT_EQ(r.segments()[2].length, 1);
  EXPECT_EQ(r.segments()[1].length, 0);
  EXPECT_EQ(r.doc_split(0), Split::train);
  EXPECT_EQ(r.num_images(), 0);
  EXPECT_EQ(verify_shard(path).tokens, 4);
}

// Rewrites one element of a 1-D integer dataset in a copy of the sample shard.
template <typename T>
std::string corrupt(const std::string& target, const std::string& dataset, int64_t index, T value) {
  const std::string path = write_sample(target);
  File f = File::open_rw(path);
  Dataset d = f.root().open_dataset(dataset);
  d.write_range(index, 1, &value);
  return path;
}

TEST_F(ShardMultimodalTest, BrokenTablesAreRejectedNamingFileDatasetAndIndex) {
  struct Case {
    std::string name, dataset;
    int64_t index, value;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"kind.h5", "segments/kind", 2, 7, "/segments/kind: segment 2: unknown kind 7"},
      {"start.h5", "segments/start", 1, 1, "/segments/start: segment 1 (text, document 0): tokens [1, +3)"},
      {"length.h5", "segments/length", 4, 3, "document 1: text segments cover tokens up to"},
      {"img.h5", "segments/start", 0, 1, "/segments/start: segment 0 (image): refers to item 1"},
      {"pair.h5", "segments/pair", 3, 0, "/segments/pair: segment 3: pair 0 is not a text segment of document 1"},
      {"textpair.h5", "segments/pair", 1, 0, "/segments/pair: segment 1: text segment with pair 0"},
      {"segoff.h5", "segments/doc_offsets", 1, 6, "dataset /segments/doc_offsets: offsets not monotone: offset[2]"},
      {"imgoff.h5", "images/offsets", 1, 20, "dataset /images/offsets: last offset 20 != pixel bytes 24"},
      {"frames.h5", "audio/frame_offsets", 1, 2, "dataset /audio/frame_offsets: last offset 2 != frames 3"},
      {"samples.h5", "audio/num_samples", 0, 0, "/audio/num_samples: clip 0 has num_samples 0"},
      {"split.h5", "docs/split", 2, 9, "/docs/split: document 2: unknown split 9"},
      {"source.h5", "docs/source", 0, 5, "/docs/source: document 0: source 5 outside [-1, 2)"},
  };
  for (const Case& c : cases) {
    std::string path;
    if (c.dataset == "segments/kind" || c.dataset == "docs/split") {
      path = corrupt<uint8_t>(file(c.name), c.dataset, c.index, uint8_t(c.value));
    } else if (c.dataset == "docs/source") {
      path = corrupt<int32_t>(file(c.name), c.dataset, c.index, int32_t(c.value));
    } else {
      path = corrupt<int64_t>(file(c.name), c.dataset, c.index, c.value);
    }
    const std::string msg = error_of([&] { ShardReader r(path); });
    EXPECT_CONTAINS(msg, path);
    EXPECT_CONTAINS(msg, c.needle);
    EXPECT_CONTAINS(error_of([&] { verify_shard(path); }), c.needle);  // verify opens the same way
  }
  // An image shape that disagrees with its byte count.
  const std::string shape = write_sample(file("shape.h5"));
  {
    File f = File::open_rw(shape);
    Dataset d = f.root().open_dataset("images/shape");
    const int32_t bad[3] = {5, 6, 1};
    d.write_range(0, 1, bad);
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(shape); }),
                  "dataset /images/shape: image 0: shape 5x6x1 does not match the 24 bytes /images/offsets gives");
}

// Counts a fuzzer or a damaged file can set anywhere: no overflow, no wild allocation.
TEST_F(ShardMultimodalTest, HugeCountsNeitherOverflowNorAllocate) {
  const std::string big = write_sample(file("big.h5"));
  {
    File f = File::open_rw(big);
    Group root = f.root();
    root.write_attr_int64("num_documents", INT64_MAX);
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(big); }),
                  "dataset /text/doc_offsets: has 4 entries, expected 9223372036854775807 + 1");

  const std::string wide = write_sample(file("wide.h5"));
  {
    File f = File::open_rw(wide);
    Dataset d = f.root().open_dataset("images/shape");
    const int32_t huge[3] = {INT32_MAX, INT32_MAX, 3};
    d.write_range(0, 1, huge);
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(wide); }), "shape 2147483647x2147483647x3 does not match the 24 bytes");

  // A table that claims 2^31 entries but was never written (sparse storage).
  const std::string sparse = write_sample(file("sparse.h5"));
  {
    File f = File::open_rw(sparse);
    Group root = f.root();
    ASSERT_GE(H5Ldelete(root.id(), "/docs/source", H5P_DEFAULT), 0);
    DatasetOptions o;
    o.chunk_rows = 1 << 16;
    root.create_dataset("docs/source", H5Elem::i32, {int64_t(1) << 31}, o);
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(sparse); }), "dataset /docs/source: has 2147483648 entries, expected 3");
  const std::string sparse_tokens = write_sample(file("sparse_tokens.h5"));
  {
    File f = File::open_rw(sparse_tokens);
    Dataset tokens = f.root().open_dataset("text/tokens");
    tokens.resize(int64_t(1) << 34);
    f.root().write_attr_int64("num_tokens", int64_t(1) << 34);
  }
  EXPECT_CONTAINS(error_of([&] { ShardReader r(sparse_tokens); }),
                  "dataset /text/tokens: storage for its 17179869184 tokens was never written");
}

TEST_F(ShardMultimodalTest, VerifyFindsBadTokenIdsAndNonFiniteFeatures) {
  const std::string ids = corrupt<int32_t>(file("ids.h5"), "text/tokens", 7, 50257);
  ShardReader ok(ids);  // opening reads no tokens
  EXPECT_EQ(error_of([&] { verify_shard(ids); }), ids + ": dataset /text/tokens: id 50257 >= vocab_size 50257 at index 7");
  const std::string nan = write_sample(file("nan.h5"));
  {
    File f = File::open_rw(nan);
    Dataset d = f.root().open_dataset("audio/features");
    const float row[4] = {0.0f, std::nanf(""), 1.0f, 2.0f};
    d.write_range(2, 1, row);
  }
  EXPECT_CONTAINS(error_of([&] { verify_shard(nan); }),
                  nan + ": dataset /audio/features: clip 0: value nan at frame 2 mel 1 is not finite");
}

}  // namespace
}  // namespace castor::io
