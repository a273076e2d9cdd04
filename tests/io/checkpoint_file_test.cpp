// Tests of io/checkpoint_file.h: tensor / scalar / blob round trips, the commit protocol
// (nothing at the final path before commit(), no file left by an uncommitted writer),
// shape mismatches, wrong files, and latest_checkpoint discovery.
#include "io/checkpoint_file.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/shard.h"
#include "support/testing.h"

namespace castor::io {
namespace {

namespace fs = std::filesystem;
using castor::testing::error_of;
using castor::testing::TempDirTest;
using castor::testing::truncated_copy;

class CheckpointFileTest : public TempDirTest {};

std::vector<float> iota(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return v;
}

// A small checkpoint with the groups the trainer uses.
void write_sample(const std::string& path, int deflate = 0) {
  CheckpointWriter w(path, deflate);
  const auto wte = iota(6 * 4, -3.0f);
  const auto attn = iota(4 * 12, 1.0f);
  const auto bias = iota(12, 0.5f);
  w.write_tensor("model/transformer.wte.weight", {6, 4}, wte.data());
  w.write_tensor("model/transformer.h.0.attn.c_attn.weight", {4, 12}, attn.data());
  w.write_tensor("model/transformer.h.0.attn.c_attn.bias", {12}, bias.data());
  w.write_tensor("optim/exp_avg/transformer.wte.weight", {6, 4}, wte.data());
  w.write_tensor("optim/exp_avg_sq/transformer.wte.weight", {6, 4}, wte.data());
  const float scale = 2.5f;
  w.write_tensor("model/scale", {}, &scale);
  w.write_int64("train.step", 1000);
  w.write_int64("loader/epoch", -3);
  w.write_double("train.lr", 6e-4);
  w.write_string("model.family", "gpt2");
  w.write_string("config", "[model]\nd_model = 4\n");
  const std::vector<uint8_t> rng = {0, 1, 2, 255, 0, 7};
  w.write_bytes("rng/cpu", rng);
  w.write_bytes("empty", std::span<const uint8_t>());
  w.commit();
}

TEST_F(CheckpointFileTest, RoundTrip) {
  const std::string path = file("step_00001000.h5");
  write_sample(path);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  CheckpointReader r(path);
  EXPECT_EQ(r.path(), path);
  EXPECT_EQ(r.schema_version(), "1.0");
  EXPECT_TRUE(r.has("model/transformer.wte.weight"));
  EXPECT_TRUE(r.has("train.step"));
  EXPECT_TRUE(r.has("loader/epoch"));
  EXPECT_TRUE(r.has("rng/cpu"));
  EXPECT_FALSE(r.has("model/nope"));
  EXPECT_FALSE(r.has("nope"));
  EXPECT_FALSE(r.has("loader/nope"));
  EXPECT_EQ(r.tensor_shape("model/transformer.h.0.attn.c_attn.weight"), (std::vector<int64_t>{4, 12}));
  std::vector<float> attn(48);
  r.read_tensor("model/transformer.h.0.attn.c_attn.weight", {4, 12}, attn.data());
  EXPECT_EQ(attn, iota(48, 1.0f));
  std::vector<float> wte(24);
  r.read_tensor("optim/exp_avg_sq/transformer.wte.weight", {6, 4}, wte.data());
  EXPECT_EQ(wte, iota(24, -3.0f));
  float scale = 0;
  r.read_tensor("model/scale", {}, &scale);
  EXPECT_EQ(scale, 2.5f);
  EXPECT_EQ(r.read_int64("train.step"), 1000);
  EXPECT_EQ(r.read_int64("loader/epoch"), -3);
  EXPECT_DOUBLE_EQ(r.read_double("train.lr"), 6e-4);
  EXPECT_EQ(r.read_string("model.family"), "gpt2");
  EXPECT_EQ(r.read_string("config"), "[model]\nd_model = 4\n");
  EXPECT_EQ(r.read_bytes("rng/cpu"), (std::vector<uint8_t>{0, 1, 2, 255, 0, 7}));
  EXPECT_TRUE(r.read_bytes("empty").empty());

  EXPECT_EQ(r.tensor_names("model"),
            (std::vector<std::string>{"model/scale", "model/transformer.h.0.attn.c_attn.bias",
                                      "model/transformer.h.0.attn.c_attn.weight", "model/transformer.wte.weight"}));
  EXPECT_EQ(r.tensor_names("optim"), (std::vector<std::string>{"optim/exp_avg/transformer.wte.weight",
                                                               "optim/exp_avg_sq/transformer.wte.weight"}));
  EXPECT_EQ(r.tensor_names("optim/exp_avg"), std::vector<std::string>{"optim/exp_avg/transformer.wte.weight"});
  EXPECT_EQ(r.tensor_names().size(), 6u);  // blobs under /meta are not tensors
  EXPECT_TRUE(r.tensor_names("absent").empty());
  EXPECT_TRUE(r.tensor_names("meta").empty());
}

TEST_F(CheckpointFileTest, CompressedTensorsRoundTrip) {
  const std::string path = file("gz.h5");
  write_sample(path, 4);
  CheckpointReader r(path);
  std::vector<float> wte(24);
  r.read_tensor("model/transformer.wte.weight", {6, 4}, wte.data());
  EXPECT_EQ(wte, iota(24, -3.0f));
}

TEST_F(CheckpointFileTest, NothingAtFinalPathUntilCommit) {
  const std::string path = file("step_00000005.h5");
  {
    CheckpointWriter w(path);
    const auto v = iota(10, 0);
    w.write_tensor("model/w", {10}, v.data());
    w.write_int64("train.step", 5);
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    EXPECT_EQ(latest_checkpoint(dir_.str()), "");  // a .tmp is never a checkpoint
  }                                                // not committed
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_TRUE(fs::is_empty(dir_.path()));

  CheckpointWriter w(path);
  w.commit();
  EXPECT_TRUE(fs::exists(path));
  EXPECT_CONTAINS(error_of([&] { w.write_int64("x", 1); }), path + ": write of x after commit()");
  EXPECT_CONTAINS(error_of([&] { w.commit(); }), "commit() called twice");
}

TEST_F(CheckpointFileTest, WriterRejectsBadNames) {
  const std::string path = file("names.h5");
  CheckpointWriter w(path);
  const float x = 1;
  w.write_tensor("model/a", {1}, &x);
  EXPECT_EQ(error_of([&] { w.write_tensor("model/a", {1}, &x); }), path + ": model/a written twice");
  EXPECT_CONTAINS(error_of([&] { w.write_tensor("model//b", {1}, &x); }),
                  path + ": bad checkpoint entry name \"model//b\"");
  EXPECT_CONTAINS(error_of([&] { w.write_tensor("/model/b", {1}, &x); }), "bad checkpoint entry name");
  EXPECT_CONTAINS(error_of([&] { w.write_int64("a/../b", 1); }), "bad checkpoint entry name");
  EXPECT_CONTAINS(error_of([&] { w.write_tensor("", {1}, &x); }), "empty checkpoint entry name");
  EXPECT_CONTAINS(error_of([&] { w.write_tensor("meta/x", {1}, &x); }), "reserved group meta");
  EXPECT_CONTAINS(error_of([&] { w.write_tensor("model/c", {-1}, &x); }),
                  path + ".tmp: dataset /model/c: negative extent");
}

TEST_F(CheckpointFileTest, ShapeMismatchNamesTensorShapesAndFile) {
  const std::string path = file("step_00000001.h5");
  write_sample(path);
  CheckpointReader r(path);
  std::vector<float> buf(100);
  EXPECT_EQ(error_of([&] {
              r.read_tensor("model/transformer.wte.weight", {4, 6}, buf.data());
            }),
            path + ": tensor model/transformer.wte.weight: shape [6, 4] in file, expected [4, 6]");
  EXPECT_EQ(error_of([&] { r.read_tensor("model/transformer.wte.weight", {24}, buf.data()); }),
            path + ": tensor model/transformer.wte.weight: shape [6, 4] in file, expected [24]");
  EXPECT_EQ(error_of([&] { r.read_tensor("model/missing", {1}, buf.data()); }),
            path + ": tensor model/missing not found");
  EXPECT_EQ(error_of([&] { r.tensor_shape("model"); }), path + ": tensor model not found");
  EXPECT_EQ(error_of([&] { r.read_int64("train.nope"); }), path + ": group /meta: attribute train.nope: missing");
  EXPECT_EQ(error_of([&] { r.read_int64("opt/step"); }), path + ": value opt/step not found (no group /meta/opt)");
  EXPECT_CONTAINS(error_of([&] { r.read_int64("model.family"); }),
                  path + ": group /meta: attribute model.family: has type string");
  EXPECT_EQ(error_of([&] { r.read_bytes("rng/gpu"); }), path + ": blob rng/gpu not found (no dataset /meta/rng/gpu)");
}

TEST_F(CheckpointFileTest, RejectsWrongFilesAndVersions) {
  expect_rejects_non_hdf5([](const std::string& path) { CheckpointReader r(path); });

  const std::string good = file("good.h5");
  {
    CheckpointWriter w(good);
    const auto big = iota(50000, 0);
    w.write_tensor("model/big", {50000}, big.data());
    w.commit();
  }
  const std::string cut = file("cut.h5");
  truncated_copy(good, cut);
  EXPECT_CONTAINS(error_of([&] { CheckpointReader r(cut); }), cut + ": cannot open HDF5 file");

  const std::string shard = file("shard.h5");
  {
    ShardWriter s(shard, "gpt2", 50257, 50256);
    s.add_document(std::vector<int32_t>{1, 2});
    s.close();
  }
  EXPECT_EQ(error_of([&] { CheckpointReader r(shard); }),
            shard + ": attribute /castor_format: expected \"checkpoint\", found \"corpus-shard\"");

  const std::string v2 = file("v2.h5");
  write_sample(v2);
  {
    File f = File::open_rw(v2);
    f.root().write_attr_string("schema_version", "2.0");
  }
  EXPECT_EQ(error_of([&] { CheckpointReader r(v2); }),
            v2 + ": attribute /schema_version: unsupported version \"2.0\" (this build reads "
                 "checkpoint 1.x)");
}

TEST_F(CheckpointFileTest, LatestCheckpoint) {
  EXPECT_EQ(latest_checkpoint(file("no-such-dir")), "");
  EXPECT_EQ(latest_checkpoint(dir_.str()), "");
  EXPECT_EQ(checkpoint_path(dir_.str(), 1000), file("step_00001000.h5"));
  EXPECT_EQ(checkpoint_path("runs/a", 123456789), "runs/a/step_123456789.h5");
  for (int64_t step : {10, 200, 30}) {
    CheckpointWriter w(checkpoint_path(dir_.str(), step));
    w.write_int64("train.step", step);
    w.commit();
  }
  std::ofstream(file("step_00000900.h5.tmp")) << "half written";
  std::ofstream(file("step_00000999.bak")) << "x";
  std::ofstream(file("step_abc.h5")) << "x";
  std::ofstream(file("other.h5")) << "x";
  fs::create_directory(file("step_00005000.h5"));  // a directory is not a checkpoint
  const std::string latest = latest_checkpoint(dir_.str());
  EXPECT_EQ(latest, file("step_00000200.h5"));
  EXPECT_EQ(CheckpointReader(latest).read_int64("train.step"), 200);
  std::ofstream(file("x")) << "x";
  EXPECT_CONTAINS(error_of([&] { latest_checkpoint(file("x")); }), file("x") + ": not a directory");
}

}  // namespace
}  // namespace castor::io
