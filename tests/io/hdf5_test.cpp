// Tests of io/hdf5.h: round trips of every element type (1-D, N-D, scalar, empty,
// chunked + gzip, extendible), ranges, attributes, groups, and garbage files, each error
// checked to be a castor::Error naming the file and the object.
#include "io/hdf5.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "support/testing.h"

namespace castor::io {
namespace {

using castor::testing::error_of;
using castor::testing::TempDirTest;
using castor::testing::truncated_copy;

class Hdf5Test : public TempDirTest {};

template <typename T>
void round_trip_1d(Group& root, const std::string& name, H5Elem elem, std::vector<T> v) {
  root.write_vector<T>(name, v);
  Dataset d = root.open_dataset(name);
  EXPECT_EQ(d.elem(), elem);
  EXPECT_EQ(d.shape(), std::vector<int64_t>{static_cast<int64_t>(v.size())});
  EXPECT_EQ(root.read_vector<T>(name), v);
}

TEST_F(Hdf5Test, RoundTripsEveryElementType) {
  const std::string path = file("types.h5");
  {
    File f = File::create(path);
    Group root = f.root();
    round_trip_1d<uint8_t>(root, "u8", H5Elem::u8, {0, 1, 255});
    round_trip_1d<uint16_t>(root, "u16", H5Elem::u16, {0, 1, 65535});
    round_trip_1d<int32_t>(root, "i32", H5Elem::i32, {-2147483647 - 1, 0, 2147483647});
    round_trip_1d<int64_t>(root, "i64", H5Elem::i64, {INT64_MIN, -1, INT64_MAX});
    round_trip_1d<float>(root, "f32", H5Elem::f32, {-1.5f, 0.0f, 3.25e30f});
    round_trip_1d<double>(root, "f64", H5Elem::f64, {-1e300, 0.1, 2.5});
    f.close();
  }
  File f = File::open_read(path);
  Group root = f.root();
  EXPECT_EQ(root.read_vector<uint16_t>("u16"), (std::vector<uint16_t>{0, 1, 65535}));
  EXPECT_EQ(root.read_vector<double>("f64"), (std::vector<double>{-1e300, 0.1, 2.5}));
  // Conversion within a class: uint16 on disk into int32 / int64 in memory, float -> double.
  EXPECT_EQ(root.read_vector<int32_t>("u16"), (std::vector<int32_t>{0, 1, 65535}));
  EXPECT_EQ(root.read_vector<int64_t>("u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(root.read_vector<double>("f32")[0], -1.5);
  EXPECT_EQ(root.children(), (std::vector<std::string>{"f32", "f64", "i32", "i64", "u16", "u8"}));
}

TEST_F(Hdf5Test, RoundTripsNdChunkedAndCompressed) {
  const std::string path = file("nd.h5");
  std::vector<float> data(5 * 4 * 3);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i) * 0.5f - 7.0f;
  {
    File f = File::create(path);
    Group root = f.root();
    DatasetOptions opts;
    opts.chunk_rows = 2;
    opts.deflate_level = 6;
    root.write_array<float>("a/b/gz", {5, 4, 3}, data.data(), opts);
    root.write_array<float>("plain", {5, 4, 3}, data.data());
    DatasetOptions auto_chunk;
    auto_chunk.deflate_level = 1;
    root.write_array<float>("auto", {5, 4, 3}, data.data(), auto_chunk);
    f.close();
  }
  File f = File::open_read(path);
  Group root = f.root();
  for (const char* name : {"a/b/gz", "/plain", "auto"}) {
    Dataset d = root.open_dataset(name);
    EXPECT_EQ(d.shape(), (std::vector<int64_t>{5, 4, 3})) << name;
    EXPECT_EQ(d.size(), 60);
    EXPECT_EQ(d.read_all<float>(), data) << name;
  }
  // The compressed dataset carries the shuffle and deflate filters and 2-row chunks.
  Dataset gz = root.open_dataset("a/b/gz");
  hid_t dcpl = H5Dget_create_plist(gz.id());
  ASSERT_GE(dcpl, 0);
  EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
  EXPECT_EQ(H5Pget_nfilters(dcpl), 2);
  hsize_t chunk[3] = {0, 0, 0};
  EXPECT_EQ(H5Pget_chunk(dcpl, 3, chunk), 3);
  EXPECT_EQ(chunk[0], 2u);
  EXPECT_EQ(chunk[1], 4u);
  H5Pclose(dcpl);
  EXPECT_TRUE(root.is_group("a"));
  EXPECT_TRUE(root.is_group("a/b"));
  EXPECT_TRUE(root.is_dataset("a/b/gz"));
  EXPECT_FALSE(root.is_dataset("a/b"));
  EXPECT_FALSE(root.exists("a/b/gz/c"));
  EXPECT_FALSE(root.exists("x/y"));
}

TEST_F(Hdf5Test, ScalarAndEmptyDatasets) {
  const std::string path = file("edge.h5");
  {
    File f = File::create(path);
    Group root = f.root();
    const double pi = 3.14159;
    root.write_array<double>("scalar", {}, &pi);
    root.write_vector<int32_t>("empty", std::vector<int32_t>{});
    DatasetOptions gz;
    gz.deflate_level = 4;
    root.write_array<float>("empty2d", {0, 7}, nullptr, gz);
    f.close();
  }
  File f = File::open_read(path);
  Group root = f.root();
  Dataset s = root.open_dataset("scalar");
  EXPECT_TRUE(s.shape().empty());
  EXPECT_EQ(s.size(), 1);
  EXPECT_EQ(s.read_all<double>(), std::vector<double>{3.14159});
  EXPECT_TRUE(root.read_vector<int32_t>("empty").empty());
  EXPECT_EQ(root.open_dataset("empty2d").shape(), (std::vector<int64_t>{0, 7}));
  std::vector<int32_t> none;
  root.open_dataset("empty").read_range<int32_t>(0, 0, none.data());
}

TEST_F(Hdf5Test, ExtendibleAppendAndRanges) {
  const std::string path = file("append.h5");
  std::vector<int32_t> all;
  {
    File f = File::create(path);
    Group root = f.root();
    DatasetOptions opts;
    opts.extendible = true;
    opts.chunk_rows = 16;
    opts.deflate_level = 3;
    Dataset d = root.create_dataset("stream", H5Elem::u16, {0}, opts);
    for (int piece = 0; piece < 10; ++piece) {
      std::vector<int32_t> v(static_cast<size_t>(piece * 7 + 1));
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(all.size() + i) * 13 % 60000;
      d.append(v.data(), static_cast<int64_t>(v.size()));
      all.insert(all.end(), v.begin(), v.end());
    }
    EXPECT_EQ(d.size(), static_cast<int64_t>(all.size()));
    std::vector<int32_t> patch = {1, 2, 3};
    d.write_range<int32_t>(5, 3, patch.data());
    all[5] = 1;
    all[6] = 2;
    all[7] = 3;
    // A fixed-size dataset cannot grow.
    Dataset fixed = root.write_vector<int32_t>("fixed", all);
    EXPECT_CONTAINS(error_of([&] { fixed.resize(1000); }), "dataset /fixed: not extendible");
    fixed = Dataset();
    d = Dataset();
    f.close();
  }
  File f = File::open_read(path);
  Dataset d = f.root().open_dataset("stream");
  EXPECT_EQ(d.read_all<int32_t>(), all);
  for (int64_t begin : {0, 1, 15, 16, 17, 100}) {
    for (int64_t count : {0, 1, 16, 40}) {
      std::vector<int32_t> got(static_cast<size_t>(count));
      d.read_range(begin, count, got.data());
      EXPECT_EQ(got, std::vector<int32_t>(all.begin() + begin, all.begin() + begin + count));
    }
  }
  std::vector<int32_t> buf(10);
  const int64_t n = d.size();
  std::string msg = error_of([&] { d.read_range(n - 5, 10, buf.data()); });
  EXPECT_CONTAINS(msg, path + ": dataset /stream: rows [");
  EXPECT_CONTAINS(msg, "outside [0, " + std::to_string(n) + ")");
  EXPECT_CONTAINS(error_of([&] { d.read_range(-1, 2, buf.data()); }), "dataset /stream: rows");
  // Reading an integer dataset as floats is refused rather than silently converted.
  std::vector<float> fbuf(static_cast<size_t>(n));
  EXPECT_CONTAINS(error_of([&] { d.read(fbuf.data(), n); }),
                  path + ": dataset /stream: stored as uint16, cannot read as float32");
  EXPECT_CONTAINS(error_of([&] { d.read(buf.data(), 10); }),
                  "dataset /stream: has " + std::to_string(n) + " elements, caller expects 10");
}

TEST_F(Hdf5Test, Attributes) {
  const std::string path = file("attrs.h5");
  {
    File f = File::create(path);
    Group root = f.root();
    root.write_attr_int64("count", -42);
    root.write_attr_int64("count", 1234567890123);  // replaced
    root.write_attr_double("lr", 3e-4);
    root.write_attr_string("name", "gpt2 \xC3\xA9");
    root.write_attr_string("empty", "");
    root.write_attr_strings("list", {"a.txt", "", "c d"});
    root.write_attr_strings("none", {});
    Dataset d = root.write_vector<float>("g/x", std::vector<float>{1, 2});
    d.write_attr_int64("rows", 2);
    root.open_group("g").write_attr_double("scale", 0.5);
    d = Dataset();
    f.close();
  }
  File f = File::open_read(path);
  Group root = f.root();
  EXPECT_EQ(root.read_attr_int64("count"), 1234567890123);
  EXPECT_DOUBLE_EQ(root.read_attr_double("lr"), 3e-4);
  EXPECT_DOUBLE_EQ(root.read_attr_double("count"), 1234567890123.0);  // integer -> double
  EXPECT_EQ(root.read_attr_string("name"), "gpt2 \xC3\xA9");
  EXPECT_EQ(root.read_attr_string("empty"), "");
  EXPECT_EQ(root.read_attr_strings("list"), (std::vector<std::string>{"a.txt", "", "c d"}));
  EXPECT_TRUE(root.read_attr_strings("none").empty());
  EXPECT_EQ(root.open_dataset("g/x").read_attr_int64("rows"), 2);
  EXPECT_DOUBLE_EQ(root.open_group("g").read_attr_double("scale"), 0.5);
  EXPECT_TRUE(root.has_attr("lr"));
  EXPECT_FALSE(root.has_attr("nope"));
  EXPECT_EQ(root.attr_names(), (std::vector<std::string>{"count", "empty", "list", "lr", "name", "none"}));

  EXPECT_EQ(error_of([&] { root.read_attr_int64("nope"); }), path + ": attribute /nope: missing");
  EXPECT_CONTAINS(error_of([&] { root.read_attr_int64("name"); }), path + ": attribute /name: has type string");
  EXPECT_CONTAINS(error_of([&] { root.read_attr_string("lr"); }),
                  path + ": attribute /lr: has type float64, expected a string");
  EXPECT_CONTAINS(error_of([&] { root.read_attr_int64("lr"); }), "expected an integer");
  EXPECT_CONTAINS(error_of([&] { root.read_attr_string("list"); }),
                  path + ": attribute /list: expected one string, found 3");
  EXPECT_CONTAINS(error_of([&] { root.open_group("g").read_attr_int64("scale"); }),
                  path + ": group /g: attribute scale: has type float64");
}

TEST_F(Hdf5Test, ReadsFixedLengthStringAttributes) {
  // Files written by other tools (h5py with numpy bytes, h5dump -> h5import) may use
  // fixed-length strings; the reader accepts them too.
  const std::string path = file("fixed.h5");
  {
    File f = File::create(path);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, 8);
    H5Tset_strpad(type, H5T_STR_SPACEPAD);
    hid_t space = H5Screate(H5S_SCALAR);
    Group root = f.root();
    hid_t attr = H5Acreate2(root.id(), "tok", type, space, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(attr, 0);
    const char value[8] = {'g', 'p', 't', '2', ' ', ' ', ' ', ' '};
    ASSERT_GE(H5Awrite(attr, type, value), 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    root = Group();
    f.close();
  }
  File f = File::open_read(path);
  EXPECT_EQ(f.root().read_attr_string("tok"), "gpt2");
}

TEST_F(Hdf5Test, GroupsAndMissingObjects) {
  const std::string path = file("groups.h5");
  File f = File::create(path);
  Group root = f.root();
  Group c = root.create_group("a/b/c");
  EXPECT_EQ(c.path(), "/a/b/c");
  EXPECT_EQ(c.abs_path("d//e/"), "/a/b/c/d/e");
  EXPECT_EQ(c.abs_path("/x"), "/x");
  EXPECT_TRUE(root.exists("a/b"));
  EXPECT_TRUE(root.exists("/"));
  EXPECT_EQ(root.require_group("a/b").path(), "/a/b");
  EXPECT_EQ(root.require_group("z").path(), "/z");
  c.write_vector<int32_t>("v", std::vector<int32_t>{1});
  EXPECT_TRUE(root.is_dataset("a/b/c/v"));
  EXPECT_EQ(root.open_group("a").children(), std::vector<std::string>{"b"});

  EXPECT_EQ(error_of([&] { root.open_group("nope/x"); }), path + ": group /nope/x not found");
  EXPECT_EQ(error_of([&] { root.open_dataset("a/missing"); }), path + ": dataset /a/missing not found");
  EXPECT_EQ(error_of([&] { root.open_dataset("a/b"); }), path + ": /a/b is not a dataset");
  EXPECT_EQ(error_of([&] { root.open_group("a/b/c/v"); }), path + ": /a/b/c/v is not a group");
  EXPECT_CONTAINS(error_of([&] { root.create_group("a/b"); }), path + ": /a/b already exists");
  EXPECT_CONTAINS(error_of([&] { c.write_vector<int32_t>("v", std::vector<int32_t>{2}); }),
                  path + ": dataset /a/b/c/v: already exists");
  DatasetOptions bad;
  bad.deflate_level = 12;
  EXPECT_CONTAINS(error_of([&] { root.create_dataset("w", H5Elem::f32, {3}, bad); }),
                  "dataset /w: deflate level must be 0..9");
  EXPECT_CONTAINS(error_of([&] { root.create_dataset("w", H5Elem::f32, {-3}); }), "dataset /w: negative extent");

  // Objects still open keep the file alive after close(); open_objects() counts them.
  EXPECT_EQ(f.open_objects(), 2);
  c = Group();
  root = Group();
  EXPECT_EQ(f.open_objects(), 0);
  f.close();
  EXPECT_FALSE(f.is_open());
}

TEST_F(Hdf5Test, CheckMacroReportsContextAndHdf5Message) {
  const std::string path = file("macro.h5");
  File f = File::create(path);
  Group root = f.root();
  const std::string msg = error_of([&] {
    CASTOR_H5_CHECK(H5Dopen2(root.id(), "/does/not/exist", H5P_DEFAULT), path, ": dataset ", "/does/not/exist");
  });
  EXPECT_CONTAINS(msg, path + ": dataset /does/not/exist: H5Dopen2 failed (");
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // The call's value comes back when it succeeds.
  const hid_t space = CASTOR_H5_CHECK(H5Screate(H5S_SCALAR), "scalar space");
  EXPECT_GE(space, 0);
  H5Sclose(space);
}

TEST_F(Hdf5Test, GarbageFilesThrowNamingThePath) {
  const std::string missing = file("missing.h5");
  EXPECT_EQ(error_of([&] { File::open_read(missing); }), missing + ": no such file");

  const std::string empty = file("empty.h5");
  std::ofstream(empty).close();
  EXPECT_EQ(error_of([&] { File::open_read(empty); }), empty + ": empty file, not an HDF5 file");

  const std::string text = file("text.h5");
  std::ofstream(text) << "In the beginning God created the heaven and the earth.\n";
  EXPECT_EQ(error_of([&] { File::open_read(text); }), text + ": not an HDF5 file (no HDF5 signature)");

  EXPECT_CONTAINS(error_of([&] { File::open_read(dir_.str()); }), "is a directory");

  // A valid file cut at half its size.
  const std::string good = file("good.h5");
  {
    File f = File::create(good);
    std::vector<double> v(20000, 1.25);
    f.root().write_vector<double>("v", v);
    f.close();
  }
  const std::string cut = file("cut.h5");
  truncated_copy(good, cut);
  const std::string msg = error_of([&] { File::open_read(cut); });
  EXPECT_CONTAINS(msg, cut + ": cannot open HDF5 file");
  EXPECT_CONTAINS(msg, "truncated");
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  EXPECT_CONTAINS(error_of([&] { File::create(file("no/such/dir/x.h5")); }),
                  file("no/such/dir/x.h5") + ": cannot create HDF5 file");
}

}  // namespace
}  // namespace castor::io
