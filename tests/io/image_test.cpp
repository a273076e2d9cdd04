// Tests of io/image.h: PNG round trips, decoding of every PNG colour type and depth (files
// made here with libpng's classic API), rejection of damaged files, IDX (plain and gzip,
// plus Fashion-MNIST when installed), and fit_image's invariants. The numerical match of
// fit_image with torch is checked by tests/python/test_image_resize.py.
#include "io/image.h"

#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <tuple>

#include "support/testing.h"

namespace castor::io {
namespace {

using testing::error_of;

Image random_image(int64_t h, int64_t w, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  Image img{h, w, c, std::vector<uint8_t>(h * w * c)};
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng());
  return img;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// A PNG in any format, from rows already packed in that format (libpng's classic writer).
struct PngSpec {
  uint32_t width = 0, height = 0;
  int color_type = PNG_COLOR_TYPE_GRAY, bit_depth = 8;
  std::vector<png_color> palette = {};
  std::vector<uint8_t> trns = {};  // palette alpha
  bool interlace = false;
};

void append_bytes(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}

// Fills out (empty on a libpng error); only trivial locals live across the setjmp.
void encode_png_into(const PngSpec& s, const std::vector<uint8_t>& rows, std::vector<uint8_t>& out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    out.clear();
    png_destroy_write_struct(&png, &info);
    return;
  }
  png_set_write_fn(png, &out, &append_bytes, nullptr);
  png_set_IHDR(png, info, s.width, s.height, s.bit_depth, s.color_type,
               s.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s.palette.empty()) png_set_PLTE(png, info, s.palette.data(), static_cast<int>(s.palette.size()));
  if (!s.trns.empty()) png_set_tRNS(png, info, s.trns.data(), static_cast<int>(s.trns.size()), nullptr);
  png_write_info(png, info);
  const size_t stride = rows.size() / s.height;
  const int passes = png_set_interlace_handling(png);
  for (int pass = 0; pass < passes; ++pass)
    for (uint32_t y = 0; y < s.height; ++y) png_write_row(png, rows.data() + y * stride);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
}

std::vector<uint8_t> encode_png(const PngSpec& s, const std::vector<uint8_t>& rows) {
  std::vector<uint8_t> out;
  encode_png_into(s, rows, out);
  EXPECT_FALSE(out.empty()) << "libpng failed to encode the test image";
  return out;
}

// Big-endian 16-bit samples of 8-bit values v (v * 257 scales back to exactly v).
std::vector<uint8_t> widen16(const std::vector<uint8_t>& v) {
  std::vector<uint8_t> out;
  for (uint8_t x : v) out.insert(out.end(), {x, x});
  return out;
}

// A chunk with its length and CRC, for hand-made PNG headers.
void append_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  const auto be32 = [&](uint32_t v) {
    out.insert(out.end(), {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)});
  };
  be32(static_cast<uint32_t>(data.size()));
  const size_t crc_from = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  be32(static_cast<uint32_t>(crc32(0, out.data() + crc_from, static_cast<uInt>(out.size() - crc_from))));
}

std::vector<uint8_t> png_header_only(uint32_t w, uint32_t h) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  append_chunk(out, "IHDR",
               {uint8_t(w >> 24), uint8_t(w >> 16), uint8_t(w >> 8), uint8_t(w), uint8_t(h >> 24), uint8_t(h >> 16),
                uint8_t(h >> 8), uint8_t(h), 8, 0, 0, 0, 0});
  append_chunk(out, "IDAT", {0x78, 0x9c});
  return out;
}

using ImagePngTest = testing::TempDirTest;

TEST_F(ImagePngTest, RoundTripGrayAndRgb) {
  for (int64_t c : {1, 3}) {
    const Image img = random_image(17, 23, c, 7 + c);
    const std::string path = file("img" + std::to_string(c) + ".png");
    write_png(path, img);
    const Image back = read_png(path);
    EXPECT_EQ(back.height, 17);
    EXPECT_EQ(back.width, 23);
    EXPECT_EQ(back.channels, c);
    EXPECT_EQ(back.pixels, img.pixels);
    EXPECT_EQ(decode_png(file_bytes(path), "mem").pixels, img.pixels);
  }
}

TEST(ImagePngDecode, PaletteWithTransparencyGivesRgb) {
  const PngSpec s{.width = 3,
                  .height = 2,
                  .color_type = PNG_COLOR_TYPE_PALETTE,
                  .bit_depth = 4,
                  .palette = {{10, 20, 30}, {200, 100, 0}, {1, 2, 3}},
                  .trns = {0, 128}};
  // 4-bit indices, two per byte, each row padded to whole bytes: [0 1 2] [2 1 0]
  const Image img = decode_png(encode_png(s, {0x01, 0x20, 0x21, 0x00}), "palette");
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{10, 20, 30, 200, 100, 0, 1, 2, 3,  //
                                              1, 2, 3, 200, 100, 0, 10, 20, 30}));
}

TEST(ImagePngDecode, SixteenBitIsScaledToEight) {
  const std::vector<uint8_t> rgb = random_image(3, 5, 3, 1).pixels;
  Image img = decode_png(
      encode_png({.width = 5, .height = 3, .color_type = PNG_COLOR_TYPE_RGB, .bit_depth = 16}, widen16(rgb)), "rgb16");
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, rgb);
  const std::vector<uint8_t> gray = random_image(4, 2, 1, 2).pixels;
  img = decode_png(
      encode_png({.width = 2, .height = 4, .color_type = PNG_COLOR_TYPE_GRAY, .bit_depth = 16}, widen16(gray)),
      "gray16");
  EXPECT_EQ(img.channels, 1);
  EXPECT_EQ(img.pixels, gray);
}

TEST(ImagePngDecode, AlphaIsDiscarded) {
  const Image rgba = random_image(4, 6, 4, 3);
  Image img = decode_png(encode_png({.width = 6, .height = 4, .color_type = PNG_COLOR_TYPE_RGBA}, rgba.pixels), "rgba");
  ASSERT_EQ(img.channels, 3);
  for (size_t i = 0; i < 24; ++i)
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(img.pixels[3 * i + c], rgba.pixels[4 * i + c]);
  const Image ga = random_image(3, 3, 2, 4);
  img = decode_png(encode_png({.width = 3, .height = 3, .color_type = PNG_COLOR_TYPE_GRAY_ALPHA}, ga.pixels),
                   "gray-alpha");
  ASSERT_EQ(img.channels, 1);
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(img.pixels[i], ga.pixels[2 * i]);
}

TEST(ImagePngDecode, OneBitGrayAndInterlaced) {
  // 10 pixels of 1 bit: 1010110000 -> 0xAC 0x00
  const Image bits = decode_png(encode_png({.width = 10, .height = 1, .bit_depth = 1}, {0xAC, 0x00}), "1bit");
  EXPECT_EQ(bits.pixels, (std::vector<uint8_t>{255, 0, 255, 0, 255, 255, 0, 0, 0, 0}));
  const Image rgb = random_image(13, 11, 3, 5);
  const PngSpec s{.width = 11, .height = 13, .color_type = PNG_COLOR_TYPE_RGB, .interlace = true};
  EXPECT_EQ(decode_png(encode_png(s, rgb.pixels), "adam7").pixels, rgb.pixels);
}

TEST_F(ImagePngTest, RejectsDamagedFilesNamingThem) {
  const std::string missing = file("missing.png");
  EXPECT_EQ(error_of([&] { read_png(missing); }), missing + ": no such file");
  const std::string empty = file("empty.png");
  dir_.write("empty.png", "");
  EXPECT_EQ(error_of([&] { read_png(empty); }), empty + ": empty file");
  const std::string text = file("text.png");
  dir_.write("text.png", "In the beginning God created the heaven and the earth.\n");
  EXPECT_EQ(error_of([&] { read_png(text); }), text + ": not a PNG file (bad signature)");
  const std::string noise = file("noise.png");
  write_bytes(noise, random_image(1, 1, 3000, 9).pixels);
  EXPECT_CONTAINS(error_of([&] { read_png(noise); }), noise + ": not a PNG file");

  const std::string good = file("good.png"), half = file("half.png"), flipped = file("flipped.png");
  write_png(good, random_image(40, 50, 3, 6));
  testing::truncated_copy(good, half);
  EXPECT_CONTAINS(error_of([&] { read_png(half); }), half + ": corrupt or truncated PNG (");
  std::vector<uint8_t> bytes = file_bytes(good);
  bytes[bytes.size() / 2] ^= 0x55;  // inside IDAT: CRC or zlib failure
  write_bytes(flipped, bytes);
  EXPECT_CONTAINS(error_of([&] { read_png(flipped); }), flipped + ": corrupt or truncated PNG (");
}

TEST(ImagePngDecode, RejectsZeroAndHugeSizes) {
  EXPECT_CONTAINS(error_of([] { decode_png(png_header_only(20000, 20000), "huge"); }),
                  "huge: image too large: 20000 x 20000 pixels (limit 2^28)");
  EXPECT_CONTAINS(error_of([] { decode_png(png_header_only(0, 5), "zero"); }), "zero: corrupt or truncated PNG (");
  const std::vector<uint8_t> signature_only = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_CONTAINS(error_of([&] { decode_png(signature_only, "sig"); }), "sig: corrupt or truncated PNG (");
}

TEST(ImagePngDecode, ThreadsDecodeIndependently) {
  const Image img = random_image(30, 20, 3, 11);
  const std::vector<uint8_t> good =
      encode_png({.width = 20, .height = 30, .color_type = PNG_COLOR_TYPE_RGB}, img.pixels);
  const std::vector<uint8_t> bad(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
  std::vector<int> ok(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        ok[t] += decode_png(good, "good").pixels == img.pixels;
        try {
          decode_png(bad, "bad");
        } catch (const Error&) {
          ++ok[t];
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 50));
}

// ---- IDX ----

std::vector<uint8_t> idx_bytes(uint32_t magic, std::vector<uint32_t> dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  dims.insert(dims.begin(), magic);
  for (uint32_t v : dims) out.insert(out.end(), {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)});
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

using ImageIdxTest = testing::TempDirTest;

TEST_F(ImageIdxTest, ReadsPlainAndGzip) {
  const Image all = random_image(3 * 4, 5, 1, 21);  // 3 images of 4 x 5
  const std::vector<uint8_t> labels = {7, 0, 9};
  const auto images = idx_bytes(0x803, {3, 4, 5}, all.pixels), label_file = idx_bytes(0x801, {3}, labels);
  write_bytes(file("img"), images);
  write_bytes(file("lab"), label_file);
  write_gz(file("img.gz"), images);
  write_gz(file("lab.gz"), label_file);
  for (const char* suffix : {"", ".gz"}) {
    const std::vector<Image> got = read_idx_images(file(std::string("img") + suffix));
    ASSERT_EQ(got.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(got[i].height, 4);
      EXPECT_EQ(got[i].width, 5);
      EXPECT_EQ(got[i].channels, 1);
      EXPECT_EQ(got[i].pixels, std::vector<uint8_t>(all.pixels.begin() + 20 * i, all.pixels.begin() + 20 * (i + 1)));
    }
    EXPECT_EQ(read_idx_labels(file(std::string("lab") + suffix)), labels);
  }
}

TEST_F(ImageIdxTest, RejectsBadFilesNamingThem) {
  const std::vector<uint8_t> data(2 * 3 * 3, 1);
  const auto good = idx_bytes(0x803, {2, 3, 3}, data);
  const std::string missing = file("missing"), empty = file("empty"), labels = file("labels"), magic = file("magic"),
                    cut = file("cut"), cut_gz = file("cut.gz"), extra = file("extra"), extra_gz = file("extra.gz"),
                    header = file("header");
  EXPECT_EQ(error_of([&] { read_idx_images(missing); }), missing + ": no such file");
  write_bytes(empty, {});
  EXPECT_EQ(error_of([&] { read_idx_labels(empty); }), empty + ": empty file");
  write_bytes(labels, idx_bytes(0x801, {2}, {1, 2}));
  EXPECT_CONTAINS(error_of([&] { read_idx_images(labels); }),
                  labels + ": IDX rank 1 (magic 0x00000801), expected rank 3");
  write_bytes(magic, idx_bytes(0x12340803, {2, 3, 3}, data));
  EXPECT_CONTAINS(error_of([&] { read_idx_images(magic); }), magic + ": not an IDX file (magic 0x12340803)");
  write_bytes(header, {0, 0, 8, 3, 0, 0});
  EXPECT_EQ(error_of([&] { read_idx_images(header); }), header + ": truncated IDX header");

  const std::vector<uint8_t> short_file(good.begin(), good.end() - 5);
  write_bytes(cut, short_file);
  EXPECT_CONTAINS(error_of([&] { read_idx_images(cut); }), cut + ": truncated: the header promises 18 bytes");
  write_gz(cut_gz, short_file);
  EXPECT_CONTAINS(error_of([&] { read_idx_images(cut_gz); }), cut_gz + ": truncated: the header promises 18 bytes");
  std::vector<uint8_t> long_file = good;
  long_file.push_back(0);
  write_bytes(extra, long_file);
  EXPECT_CONTAINS(error_of([&] { read_idx_images(extra); }), extra + ": trailing data");
  write_gz(extra_gz, long_file);
  EXPECT_CONTAINS(error_of([&] { read_idx_images(extra_gz); }), extra_gz + ": trailing data");
}

TEST(ImageIdxReal, FashionMnistTest) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  if (!std::filesystem::exists(dir + "t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST in " << dir;
  const std::vector<Image> images = read_idx_images(dir + "t10k-images-idx3-ubyte.gz");
  ASSERT_EQ(images.size(), 10000u);
  int64_t nonzero = 0;
  for (const Image& img : images) {
    ASSERT_EQ(img.height, 28);
    ASSERT_EQ(img.width, 28);
    ASSERT_EQ(img.channels, 1);
    for (uint8_t p : img.pixels) nonzero += p != 0;
  }
  EXPECT_GT(nonzero, 10000 * 28 * 28 / 4);  // real pictures, not zeros
  const std::vector<uint8_t> labels = read_idx_labels(dir + "t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(labels.size(), 10000u);
  std::vector<int> counts(10, 0);
  for (uint8_t l : labels) {
    ASSERT_LT(l, 10);
    ++counts[l];
  }
  EXPECT_EQ(counts, std::vector<int>(10, 1000));  // the test split is balanced
}

// ---- fit_image ----

TEST(ImageFit, IdentityWhenItAlreadyFits) {
  for (int64_t c : {1, 3}) {
    const Image img = random_image(32, 32, c, 31);
    const Image out = fit_image(img, 32, c);
    EXPECT_EQ(out.height, 32);
    EXPECT_EQ(out.channels, c);
    EXPECT_EQ(out.pixels, img.pixels);
  }
}

TEST(ImageFit, ConstantStaysConstant) {
  const std::tuple<int64_t, int64_t, int64_t> cases[] = {{28, 28, 64}, {100, 60, 32}, {60, 100, 32},
                                                         {7, 300, 5},  {33, 17, 16},  {5, 9, 40}};
  for (auto [h, w, size] : cases)
    for (int64_t c : {1, 3}) {
      Image img{h, w, c, std::vector<uint8_t>(h * w * c, 173)};
      const Image out = fit_image(img, size, c);
      EXPECT_EQ(out.height, size);
      EXPECT_EQ(out.width, size);
      EXPECT_EQ(out.pixels, std::vector<uint8_t>(size * size * c, 173)) << h << "x" << w << " -> " << size;
    }
}

TEST(ImageFit, CropOnlyUsesFloorOffsets) {
  const Image img = random_image(8, 11, 3, 41);  // height already 8: no resampling, crop columns 1..8
  const Image out = fit_image(img, 8, 3);
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 8 * 3; ++x) ASSERT_EQ(out.pixels[(y * 8) * 3 + x], img.pixels[(y * 11 + 1) * 3 + x]);
}

TEST(ImageFit, ChannelConversions) {
  const Image gray = random_image(9, 9, 1, 51);
  const Image rgb = fit_image(gray, 9, 3);
  ASSERT_EQ(rgb.channels, 3);
  for (size_t i = 0; i < gray.pixels.size(); ++i) EXPECT_EQ(rgb.pixels[3 * i + 1], gray.pixels[i]);
  EXPECT_EQ(fit_image(rgb, 9, 1).pixels, gray.pixels);
  // ITU-R 601 luma, rounded: red 76.245, green 149.685, blue 29.07
  const Image colours{1, 3, 3, {255, 0, 0, 0, 255, 0, 0, 0, 255}};
  EXPECT_EQ(fit_image(colours, 1, 1).pixels, std::vector<uint8_t>{150});  // the centre of 1 x 3
  EXPECT_EQ(fit_image(Image{1, 1, 3, {0, 0, 255}}, 1, 1).pixels, std::vector<uint8_t>{29});
  EXPECT_EQ(fit_image(Image{1, 1, 3, {255, 0, 0}}, 1, 1).pixels, std::vector<uint8_t>{76});
}

TEST(ImageFit, RejectsBadArguments) {
  const Image img = random_image(4, 4, 3, 61);
  EXPECT_CONTAINS(error_of([&] { fit_image(img, 0, 3); }), "fit_image: bad size 0");
  EXPECT_CONTAINS(error_of([&] { fit_image(img, 4, 2); }), "fit_image: channels must be 1 or 3");
  Image broken = img;
  broken.pixels.pop_back();
  EXPECT_CONTAINS(error_of([&] { fit_image(broken, 4, 3); }), "fit_image: 47 pixel bytes for 4 x 4 x 3");
}

}  // namespace
}  // namespace castor::io
