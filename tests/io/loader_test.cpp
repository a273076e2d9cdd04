// Tests of io/loader.h: the text stream equals the documents joined by end-of-text; a
// hand-laid multimodal example (patches, stacked frames, padding so media never straddle
// sequences, loss masks, positions, pairs); each epoch is a permutation; dp ranks read
// disjoint slices of one global stream equal to dp=1 with accumulation; the cursor resumes
// exactly under another dp; prefetching changes nothing; bad layouts and data are errors.
#include "io/loader.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/testing.h"

namespace castor::io {
namespace {

using castor::testing::error_of;
using castor::testing::TempDirTest;

constexpr int64_t kVocab = 100;
constexpr int32_t kEot = 99;

class LoaderTest : public TempDirTest {
 protected:
  // Text shards of n documents with ids 1..98 in a fixed pattern; returns the expected stream.
  std::vector<int32_t> write_text(const std::string& name, int n, int seed) {
    std::vector<int32_t> stream;
    ShardWriter w(file(name), "test", kVocab, kEot);
    for (int d = 0; d < n; ++d) {
      std::vector<int32_t> doc;
      for (int i = 0; i < (d * 7 + seed) % 13; ++i) doc.push_back(1 + (d * 31 + i * 7 + seed) % 98);
      w.add_document(doc);
      stream.insert(stream.end(), doc.begin(), doc.end());
      stream.push_back(kEot);
    }
    w.close();
    return stream;
  }
};

LoaderOptions options(int64_t T, int64_t B, bool shuffle, int prefetch = 0) {
  LoaderOptions o;
  o.seq_len = T;
  o.batch_size = B;
  o.seed = 7;
  o.shuffle = shuffle;
  o.prefetch = prefetch;
  return o;
}

TEST_F(LoaderTest, TextStreamIsDocumentsJoinedByEndOfText) {
  std::vector<int32_t> stream = write_text("a.h5", 20, 1);
  const std::vector<int32_t> b = write_text("b.h5", 15, 4);
  stream.insert(stream.end(), b.begin(), b.end());
  const int64_t T = 16;
  Loader loader(dir_.str(), options(T, 1, /*shuffle=*/false));
  ASSERT_EQ(loader.stream_positions(), int64_t(stream.size()));
  ASSERT_EQ(loader.windows_per_epoch(), (int64_t(stream.size()) - 1) / T);
  EXPECT_EQ(loader.num_documents(), 35);
  for (int64_t w = 0; w < loader.windows_per_epoch(); ++w) {
    const Batch batch = loader.next();
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(batch.ids[size_t(t)], stream[size_t(w * T + t)]) << "window " << w << " position " << t;
      ASSERT_EQ(batch.targets[size_t(t)], stream[size_t(w * T + t + 1)]);
      ASSERT_EQ(batch.modality[size_t(t)], uint8_t(Modality::text));
    }
    // Positions restart after each end-of-text; document numbers count up within the row.
    for (int64_t t = 1; t < T; ++t) {
      const bool new_doc = batch.ids[size_t(t - 1)] == kEot;
      EXPECT_EQ(batch.position[size_t(t)], new_doc ? 0 : batch.position[size_t(t - 1)] + 1);
      EXPECT_EQ(batch.doc[size_t(t)], batch.doc[size_t(t - 1)] + (new_doc ? 1 : 0));
    }
    EXPECT_EQ(batch.doc[0], 0);
  }
  EXPECT_EQ(loader.cursor().epoch, 1);
  EXPECT_EQ(loader.cursor().index, 0);
}

// Image 4x4 (patch 2: 4 positions) + caption; prompt text + audio of 5 frames (stack 2:
// 3 positions) + transcript; a text document.
std::string write_multimodal(const std::string& path) {
  LogMelConfig mel;
  mel.n_mels = 3;
  ShardWriterOptions o;
  o.audio = mel;
  ShardWriter w(path, "test", kVocab, kEot, o);
  DocumentData d0, d1, d2;
  SegmentData img;
  img.kind = SegmentKind::image;
  img.image.height = img.image.width = 4;
  img.image.channels = 1;
  for (int i = 0; i < 16; ++i) img.image.pixels.push_back(uint8_t(i * 10));
  img.pair = 1;
  SegmentData cap;
  cap.tokens = {11, 12, 13};
  d0.segments = {img, cap};
  SegmentData prompt;
  prompt.tokens = {21, 22};
  prompt.flags = kSegmentNoLoss;
  SegmentData aud;
  aud.kind = SegmentKind::audio;
  aud.audio.frames = 5;
  aud.audio.num_samples = 700;  // 1 + 700 / 160 = 5 frames
  for (int i = 0; i < 15; ++i) aud.audio.data.push_back(float(i) + 0.5f);
  aud.pair = 2;
  SegmentData tr;
  tr.tokens = {31};
  d1.segments = {prompt, aud, tr};
  SegmentData txt;
  txt.tokens = {41, 42, 43, 44, 45, 46};
  d2.segments = {txt};
  for (const auto* d : {&d0, &d1, &d2}) w.add_document(*d);
  w.close();
  return path;
}

TEST_F(LoaderTest, MultimodalWindowsCarryPatchesFramesMasksAndPairs) {
  LoaderOptions o = options(8, 1, false);
  o.image_patch = 2;
  o.audio_stack = 2;
  Loader loader(write_multimodal(file("mm.h5")), o);
  EXPECT_EQ(loader.stream_positions(), 22);  // no padding needed at T = 8
  ASSERT_EQ(loader.windows_per_epoch(), 2);
  const uint8_t I = uint8_t(Modality::image), A = uint8_t(Modality::audio), X = uint8_t(Modality::text);

  const Batch w0 = loader.next();
  EXPECT_EQ(w0.ids, (std::vector<int32_t>{kEot, kEot, kEot, kEot, 11, 12, 13, kEot}));
  EXPECT_EQ(w0.targets, (std::vector<int32_t>{-1, -1, -1, 11, 12, 13, kEot, -1}));  // 21 is a prompt token
  EXPECT_EQ(w0.modality, (std::vector<uint8_t>{I, I, I, I, X, X, X, X}));
  EXPECT_EQ(w0.position, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(w0.doc, (std::vector<int32_t>(8, 0)));
  EXPECT_EQ(w0.patch_dim, 4);
  EXPECT_EQ(w0.patch_pos, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(w0.patch_grid, (std::vector<int32_t>{0, 0, 0, 1, 1, 0, 1, 1}));
  // Patch (1, 0) holds pixels (2,0) (2,1) (3,0) (3,1) = indices 8, 9, 12, 13.
  const std::vector<float> want{80 / 255.0f, 90 / 255.0f, 120 / 255.0f, 130 / 255.0f};
  for (size_t j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(w0.patches[8 + j], want[j]);
  ASSERT_EQ(w0.pairs.size(), 1u);
  EXPECT_EQ(w0.pairs[0].media, Modality::image);
  EXPECT_EQ(w0.pairs[0].media_begin, 0);
  EXPECT_EQ(w0.pairs[0].media_end, 4);
  EXPECT_EQ(w0.pairs[0].text_begin, 4);
  EXPECT_EQ(w0.pairs[0].text_end, 7);
  EXPECT_TRUE(w0.frames.empty());

  const Batch w1 = loader.next();
  EXPECT_EQ(w1.ids, (std::vector<int32_t>{21, 22, kEot, kEot, kEot, 31, kEot, 41}));
  EXPECT_EQ(w1.targets, (std::vector<int32_t>{-1, -1, -1, -1, 31, kEot, 41, 42}));
  EXPECT_EQ(w1.modality, (std::vector<uint8_t>{X, X, A, A, A, X, X, X}));
  EXPECT_EQ(w1.position, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 0}));
  EXPECT_EQ(w1.doc, (std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, 1}));
  EXPECT_EQ(w1.frame_dim, 6);
  EXPECT_EQ(w1.frame_pos, (std::vector<int32_t>{2, 3, 4}));
  std::vector<float> frames;
  for (int i = 0; i < 15; ++i) frames.push_back(float(i) + 0.5f);
  frames.insert(frames.end(), 3, 0.0f);  // the last position stacks frame 4 and zeros
  EXPECT_EQ(w1.frames, frames);
  ASSERT_EQ(w1.pairs.size(), 1u);
  EXPECT_EQ(w1.pairs[0].media, Modality::audio);
  EXPECT_EQ(w1.pairs[0].media_begin, 2);
  EXPECT_EQ(w1.pairs[0].text_begin, 5);
  EXPECT_EQ(w1.pairs[0].text_end, 6);
  EXPECT_EQ(w1.text_tokens(), 5);
}

TEST_F(LoaderTest, MediaNeverStraddleTwoSequences) {
  LoaderOptions o = options(6, 1, false);
  o.image_patch = 2;
  o.audio_stack = 2;
  Loader loader(write_multimodal(file("mm.h5")), o);
  // Audio would occupy positions 10-12 across the boundary at 12: padded to start at 12.
  EXPECT_EQ(loader.stream_positions(), 24);
  const uint8_t P = uint8_t(Modality::pad), X = uint8_t(Modality::text), A = uint8_t(Modality::audio);
  (void)loader.next();
  const Batch w1 = loader.next();  // positions 6..11 (+ target slot 12)
  EXPECT_EQ(w1.modality, (std::vector<uint8_t>{X, X, X, X, P, P}));
  EXPECT_EQ(w1.targets, (std::vector<int32_t>{kEot, -1, -1, -1, -1, -1}));
  EXPECT_EQ(w1.doc, (std::vector<int32_t>{0, 0, 1, 1, -1, -1}));
  EXPECT_TRUE(w1.frames.empty());
  const Batch w2 = loader.next();  // the audio starts this window
  EXPECT_EQ(w2.modality, (std::vector<uint8_t>{A, A, A, X, X, X}));
  EXPECT_EQ(w2.frame_pos, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(w2.position[0], 4);  // positions count from the document start, padding included
}

// The windows (identified by their ids + targets) of a batch, row by row.
std::vector<std::vector<int32_t>> rows(const Batch& b) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t r = 0; r < b.B; ++r) {
    std::vector<int32_t> row(b.ids.begin() + r * b.T, b.ids.begin() + (r + 1) * b.T);
    row.insert(row.end(), b.targets.begin() + r * b.T, b.targets.begin() + (r + 1) * b.T);
    out.push_back(row);
  }
  return out;
}

TEST_F(LoaderTest, EachEpochIsAPermutationAndTheSeedDecidesIt) {
  write_text("a.h5", 60, 2);
  Loader a(dir_.str(), options(8, 1, true));
  const int64_t n = a.windows_per_epoch();
  ASSERT_GT(n, 20);
  std::set<std::vector<int32_t>> all;
  Loader in_order(dir_.str(), options(8, 1, false));
  for (int64_t w = 0; w < n; ++w) all.insert(rows(in_order.next())[0]);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<std::vector<int32_t>> seen;
    std::vector<std::vector<int32_t>> order;
    for (int64_t i = 0; i < n; ++i) {
      const auto r = rows(a.next())[0];
      order.push_back(r);
      seen.insert(r);
    }
    EXPECT_EQ(seen, all) << "epoch " << epoch;
  }
  LoaderOptions other = options(8, 1, true);
  Loader b(dir_.str(), options(8, 1, true)), c(dir_.str(), other);
  other.seed = 8;
  Loader d(dir_.str(), other);
  int same_seed_diffs = 0, other_seed_diffs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto rb = rows(b.next())[0], rc = rows(c.next())[0], rd = rows(d.next())[0];
    same_seed_diffs += rb != rc;
    other_seed_diffs += rb != rd;
  }
  EXPECT_EQ(same_seed_diffs, 0);
  EXPECT_GT(other_seed_diffs, n / 2);
}

TEST_F(LoaderTest, DpRanksReadDisjointSlicesOfTheDp1Stream) {
  write_text("a.h5", 80, 3);
  const int64_t T = 8, B = 2, dp = 4, steps = 12;  // crosses an epoch boundary
  Loader single(dir_.str(), options(T, B * dp, true));
  Loader accum(dir_.str(), options(T, B, true));
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < dp; ++r) {
    LoaderOptions o = options(T, B, true);
    o.dp_rank = r;
    o.dp_size = int(dp);
    ranks.push_back(std::make_unique<Loader>(dir_.str(), o));
  }
  ASSERT_LT(single.windows_per_epoch(), steps * B * dp);
  for (int64_t s = 0; s < steps; ++s) {
    const auto global = rows(single.next());
    std::vector<std::vector<int32_t>> from_ranks, from_accum;
    for (auto& r : ranks)
      for (auto& row : rows(r->next())) from_ranks.push_back(row);
    for (int m = 0; m < dp; ++m)
      for (auto& row : rows(accum.next())) from_accum.push_back(row);
    ASSERT_EQ(from_ranks, global) << "step " << s;
    ASSERT_EQ(from_accum, global) << "step " << s;
    for (auto& r : ranks) ASSERT_EQ(r->cursor().index, single.cursor().index);
  }
}

TEST_F(LoaderTest, CursorResumesExactlyUnderAnotherDp) {
  write_text("a.h5", 80, 5);
  const int64_t T = 8;
  Loader reference(dir_.str(), options(T, 8, true));
  std::vector<std::vector<std::vector<int32_t>>> ref;
  for (int s = 0; s < 10; ++s) ref.push_back(rows(reference.next()));
  // Steps 0-3 on dp = 4 (B = 2), then resume on dp = 2 (B = 4) from rank 0's cursor.
  // Every rank holds the same global cursor (checked above), so rank 0's stands for all.
  LoaderCursor saved;
  {
    LoaderOptions o = options(T, 2, true, 2);
    o.dp_size = 4;
    Loader rank0(dir_.str(), o);
    for (int s = 0; s < 4; ++s) (void)rank0.next();
    saved = rank0.cursor();
  }
  for (int s = 4; s < 10; ++s) {
    std::vector<std::vector<int32_t>> got;
    for (int r = 0; r < 2; ++r) {
      LoaderOptions o = options(T, 4, true, 2);
      o.dp_rank = r;
      o.dp_size = 2;
      Loader resumed(dir_.str(), o);
      resumed.set_cursor(saved);
      for (int k = 4; k < s; ++k) (void)resumed.next();
      for (auto& row : rows(resumed.next())) got.push_back(row);
    }
    ASSERT_EQ(got, ref[size_t(s)]) << "step " << s;
  }
}

TEST_F(LoaderTest, PrefetchingChangesNothing) {
  write_text("a.h5", 50, 6);
  LoaderOptions o = options(8, 3, true);
  Loader sync(dir_.str(), o);
  o.prefetch = 3;
  Loader ahead(dir_.str(), o);
  for (int i = 0; i < 25; ++i) {
    if (i == 10) {  // a jump (as after a resume) restarts the prefetch queue
      sync.set_cursor({2, 5});
      ahead.set_cursor({2, 5});
    }
    ASSERT_EQ(rows(sync.next()), rows(ahead.next())) << "batch " << i;
    ASSERT_EQ(sync.cursor().index, ahead.cursor().index);
  }
}

TEST_F(LoaderTest, BadLayoutsAndDataAreErrorsNamingTheFile) {
  const std::string mm = write_multimodal(file("mm.h5"));
  LoaderOptions o = options(8, 1, false);
  o.audio_stack = 2;
  EXPECT_CONTAINS(error_of([&] { Loader l(mm, o); }), mm + ": has 1 images, but this model takes no image input");
  o.image_patch = 3;
  EXPECT_CONTAINS(error_of([&] { Loader l(mm, o); }), mm + ": image 0 is 4x4, not a multiple of the patch size 3");
  o.image_patch = 1;
  EXPECT_CONTAINS(error_of([&] { Loader l(mm, o); }),
                  mm + ": image 0 takes 16 positions, more than the sequence length 8");
  o.image_patch = 2;
  o.audio_stack = 0;
  EXPECT_CONTAINS(error_of([&] { Loader l(mm, o); }), mm + ": has 1 audio clips, but this model takes no audio input");

  std::filesystem::remove(mm);
  write_text("a.h5", 10, 1);
  {
    ShardWriter w(file("z.h5"), "other", kVocab, kEot);
    w.add_document(std::vector<int32_t>{1, 2, 3});
    w.close();
  }
  EXPECT_CONTAINS(error_of([&] { Loader l(dir_.str(), options(4, 1, false)); }),
                  file("z.h5") + ": tokenizer other (vocab 100) differs from the first shard's");
  std::filesystem::remove(file("z.h5"));
  EXPECT_CONTAINS(error_of([&] { Loader l(dir_.str(), options(4096, 1, false)); }), "too few for one sequence of 4096");
  Loader ok(dir_.str(), options(4, 1, false));
  EXPECT_CONTAINS(error_of([&] { ok.set_cursor({0, ok.windows_per_epoch() + 1}); }), "does not fit this corpus");
  LoaderOptions bad = options(4, 1, false);
  bad.dp_rank = 2;
  bad.dp_size = 2;
  EXPECT_CONTAINS(error_of([&] { Loader l(dir_.str(), bad); }), "loader: dp rank 2 outside [0, 2)");
}

TEST_F(LoaderTest, ABadTokenIdSurfacesFromThePrefetchThread) {
  write_text("a.h5", 30, 2);
  {
    File f = File::open_rw(file("a.h5"));
    Dataset d = f.root().open_dataset("text/tokens");
    const int32_t bad = 150;
    d.write_range(40, 1, &bad);
  }
  LoaderOptions o = options(8, 1, false, /*prefetch=*/2);
  Loader l(dir_.str(), o);  // opening reads no tokens
  std::string msg;
  for (int i = 0; i < 100 && msg.empty(); ++i) {
    try {
      (void)l.next();
    } catch (const Error& e) {
      msg = e.what();
    }
  }
  EXPECT_EQ(msg, file("a.h5") + ": dataset /text/tokens: id 150 >= vocab_size 100 at index 40");
  // The worker has stopped; later calls raise the same error instead of waiting forever.
  EXPECT_EQ(error_of([&] { (void)l.next(); }), msg);
  // A new cursor restarts the worker: the windows before the bad one read again.
  l.set_cursor({0, 0});
  EXPECT_EQ(l.next().B, 1);
}

}  // namespace
}  // namespace castor::io
