// PNG through libpng (classic API for decoding, so every format is reduced to 8-bit gray or
// RGB by libpng's own transforms; simplified API for writing), IDX through zlib's gz*
// functions (which read plain files transparently), and the antialiased bilinear resize.
// libpng reports errors by longjmp: the frames it skips hold nothing with a destructor.
#include "io/image.h"

#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace castor::io {

namespace {

// ": no such file" or ": cannot open (<reason>)", from errno after a failed open.
std::string open_error() {
  return errno == ENOENT ? ": no such file" : cat(": cannot open (", std::strerror(errno), ")");
}

void check_image(const Image& img, const char* what) {
  CASTOR_CHECK(img.channels == 1 || img.channels == 3, what, ": channels must be 1 or 3, got ", img.channels);
  CASTOR_CHECK(img.height > 0 && img.width > 0 && img.height * img.width <= kMaxImagePixels, what, ": bad image size ",
               img.height, " x ", img.width);
  CASTOR_CHECK(img.pixels.size() == static_cast<size_t>(img.height * img.width * img.channels), what, ": ",
               img.pixels.size(), " pixel bytes for ", img.height, " x ", img.width, " x ", img.channels);
}

// ---- PNG ---------------------------------------------------------------------------------

// Input and error state shared with the libpng callbacks (plain data: longjmp may skip it).
struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

[[noreturn]] void png_on_error(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof src->message, "corrupt or truncated PNG (%s)", msg);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // benign chunk problems: ignored

void png_on_read(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->size - src->pos < n) png_error(png, "unexpected end of data");
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

struct PngReadHandle {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReadHandle() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

// Decodes into img; false after a libpng error or a refused size (src.message says which).
// Only trivial locals live here, and none is read after the longjmp returns to setjmp.
bool png_decode_into(png_structp png, png_infop info, PngSource& src, Image& img) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (static_cast<int64_t>(w) * h > kMaxImagePixels) {
    std::snprintf(src.message, sizeof src.message, "image too large: %u x %u pixels (limit 2^28)",
                  static_cast<unsigned>(h), static_cast<unsigned>(w));
    return false;
  }
  png_set_scale_16(png);                // 16 -> 8 bits, rounded
  png_set_palette_to_rgb(png);          // palette -> RGB (tRNS -> alpha, stripped below)
  png_set_expand_gray_1_2_4_to_8(png);  // 1/2/4-bit gray -> 8-bit
  png_set_strip_alpha(png);             // alpha is discarded, not composited
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  if (png_get_bit_depth(png, info) != 8 || (channels != 1 && channels != 3) ||
      png_get_rowbytes(png, info) != static_cast<size_t>(w) * channels)
    png_error(png, "unexpected pixel layout after conversion");
  img.height = h;
  img.width = w;
  img.channels = channels;
  img.pixels.resize(static_cast<size_t>(w) * h * channels);
  for (int pass = 0; pass < passes; ++pass)
    for (png_uint_32 y = 0; y < h; ++y)
      png_read_row(png, img.pixels.data() + static_cast<size_t>(y) * w * channels, nullptr);
  png_read_end(png, nullptr);  // checks the rest of the stream (CRCs, IEND)
  return true;
}

// Reads a whole file; errors name the file.
std::vector<uint8_t> read_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  CASTOR_CHECK(f != nullptr, path, open_error());
  std::vector<uint8_t> bytes;
  size_t got = 0;
  do {
    bytes.resize(got + (size_t{1} << 16));
    got += std::fread(bytes.data() + got, 1, bytes.size() - got, f.get());
  } while (got == bytes.size());
  CASTOR_CHECK(!std::ferror(f.get()), path, ": read error (", std::strerror(errno), ")");
  bytes.resize(got);
  CASTOR_CHECK(!bytes.empty(), path, ": empty file");
  return bytes;
}

// ---- IDX ---------------------------------------------------------------------------------

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// An open IDX file positioned at its data, whose header has been checked.
struct IdxFile {
  std::string path;
  GzFile gz;
  std::vector<int64_t> dims;
  int64_t data_bytes = 1;  // product of dims
  int64_t consumed = 0;    // data bytes read so far
};

// Reads up to n bytes; fewer only at the end of the (decompressed) stream.
int64_t gz_read_some(IdxFile& idx, uint8_t* out, int64_t n) {
  int64_t got = 0;
  while (got < n) {
    const int r = gzread(idx.gz.get(), out + got, static_cast<unsigned>(std::min<int64_t>(n - got, 1 << 30)));
    if (r < 0) {
      int err = 0;
      const char* msg = gzerror(idx.gz.get(), &err);
      CASTOR_FAIL(idx.path, ": read error (", err == Z_ERRNO ? std::strerror(errno) : msg, ")");
    }
    if (r == 0) break;
    got += r;
  }
  return got;
}

void idx_read(IdxFile& idx, uint8_t* out, int64_t n) {
  const int64_t got = gz_read_some(idx, out, n);
  idx.consumed += got;
  CASTOR_CHECK(got == n, idx.path, ": truncated: the header promises ", idx.data_bytes,
               " bytes of data, it ends after ", idx.consumed);
}

IdxFile open_idx(const std::string& path, int rank) {
  IdxFile idx{path, GzFile(gzopen(path.c_str(), "rb")), {}, 1, 0};
  CASTOR_CHECK(idx.gz != nullptr, path, open_error());
  const bool gzip = gzdirect(idx.gz.get()) == 0;  // zlib checks for the 1f 8b magic
  uint8_t head[4 + 4 * 3];
  const int64_t got = gz_read_some(idx, head, 4);
  CASTOR_CHECK(got > 0, path, ": empty file");
  CASTOR_CHECK(got == 4, path, ": truncated IDX header");
  char magic[16], type[8];
  std::snprintf(magic, sizeof magic, "0x%02x%02x%02x%02x", head[0], head[1], head[2], head[3]);
  std::snprintf(type, sizeof type, "0x%02x", head[2]);
  CASTOR_CHECK(head[0] == 0 && head[1] == 0, path, ": not an IDX file (magic ", magic, ")");
  CASTOR_CHECK(head[2] == 0x08, path, ": IDX element type ", type, " not supported (only 0x08 = uint8; magic ", magic,
               ")");
  CASTOR_CHECK(head[3] == rank, path, ": IDX rank ", int{head[3]}, " (magic ", magic, "), expected rank ", rank,
               (rank == 3 ? " (0x00000803, images)" : " (0x00000801, labels)"));
  CASTOR_CHECK(gz_read_some(idx, head + 4, 4 * rank) == 4 * rank, path, ": truncated IDX header");
  for (int i = 0; i < rank; ++i) {
    const uint8_t* b = head + 4 + 4 * i;
    idx.dims.push_back(int64_t{b[0]} << 24 | int64_t{b[1]} << 16 | int64_t{b[2]} << 8 | b[3]);
  }
  if (rank == 3) {
    CASTOR_CHECK(idx.dims[1] > 0 && idx.dims[2] > 0 && idx.dims[1] * idx.dims[2] <= kMaxImagePixels, path,
                 ": bad IDX image size ", idx.dims[1], " x ", idx.dims[2]);
  }
  for (int64_t d : idx.dims) idx.data_bytes *= d;  // <= 2^32 * 2^28: no overflow
  if (!gzip) {  // a plain file's length is known: check it before allocating anything
    std::error_code ec;
    const auto size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    const int64_t want = 4 + 4 * rank + idx.data_bytes;
    CASTOR_CHECK(ec || size == want, path, size < want ? ": truncated" : ": trailing data", ": the header promises ",
                 idx.data_bytes, " bytes of data (", want, " in all), the file has ", size);
  }
  return idx;
}

void idx_expect_end(IdxFile& idx) {
  uint8_t extra;
  CASTOR_CHECK(gz_read_some(idx, &extra, 1) == 0, idx.path, ": trailing data after the ", idx.data_bytes,
               " bytes the header promises");
}

// ---- resampling --------------------------------------------------------------------------

// Filter taps of one axis: output i reads input [start[i], start[i] + len[i]) with weights
// w[i * stride + k].
struct Taps {
  std::vector<int64_t> start, len;
  std::vector<float> w;
  int64_t stride = 1;
};

// Taps of outputs [first, first + count) of an axis resized from in to out pixels: torch's
// _compute_indices_min_size_weights_aa (= PIL's precompute_coeffs) with the triangle filter,
// half-width 1 input pixel, or `scale` when downscaling (antialiasing). Weights are computed
// in double and normalised over the taps that fall inside the image.
Taps make_taps(int64_t in, int64_t out, int64_t first, int64_t count) {
  Taps t;
  t.start.resize(count);
  t.len.resize(count);
  if (in == out) {  // identity (torch's extra taps there have weight 0)
    for (int64_t i = 0; i < count; ++i) {
      t.start[i] = first + i;
      t.len[i] = 1;
    }
    t.w.assign(count, 1.0f);
    return t;
  }
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  t.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.w.assign(count * t.stride, 0.0f);
  std::vector<double> w(t.stride);
  for (int64_t i = 0; i < count; ++i) {
    const double center = scale * (static_cast<double>(first + i) + 0.5);
    const int64_t lo = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
    const int64_t n = std::min({static_cast<int64_t>(center + support + 0.5), in, lo + t.stride}) - lo;
    double total = 0.0;
    for (int64_t k = 0; k < n; ++k) {
      const double x = std::abs((static_cast<double>(lo + k) - center + 0.5) * invscale);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[k];
    }
    for (int64_t k = 0; k < n; ++k) t.w[i * t.stride + k] = static_cast<float>(total != 0.0 ? w[k] / total : w[k]);
    t.start[i] = lo;
    t.len[i] = n;
  }
  return t;
}

// Horizontal pass: rows [row0, row0 + rows) of src (width W) -> tmp (rows x tx.len.size() x C).
template <int C>
void resample_rows(const uint8_t* src, int64_t W, int64_t row0, int64_t rows, const Taps& tx, float* tmp) {
  const auto ow = static_cast<int64_t>(tx.start.size());
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + (row0 + r) * W * C;
    float* d = tmp + r * ow * C;
    for (int64_t x = 0; x < ow; ++x) {
      const float* w = tx.w.data() + x * tx.stride;
      const uint8_t* p = s + tx.start[x] * C;
      float acc[C] = {};
      for (int64_t k = 0; k < tx.len[x]; ++k)
        for (int c = 0; c < C; ++c) acc[c] += w[k] * static_cast<float>(p[k * C + c]);
      for (int c = 0; c < C; ++c) d[x * C + c] = acc[c];
    }
  }
}

// Vertical pass: tmp (whose row 0 is input row row0, rows of `row` floats) -> out, rounded.
void resample_cols(const float* tmp, int64_t row0, int64_t row, const Taps& ty, uint8_t* out) {
  std::vector<float> acc(row);
  for (size_t y = 0; y < ty.start.size(); ++y) {
    const float* w = ty.w.data() + y * ty.stride;
    const float* base = tmp + (ty.start[y] - row0) * row;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t k = 0; k < ty.len[y]; ++k)
      for (int64_t i = 0; i < row; ++i) acc[i] += w[k] * base[k * row + i];
    uint8_t* o = out + y * row;
    for (int64_t i = 0; i < row; ++i) o[i] = static_cast<uint8_t>(std::clamp(acc[i], 0.0f, 255.0f) + 0.5f);
  }
}

Image convert_channels(const Image& in, int64_t channels) {
  Image out{in.height, in.width, channels, std::vector<uint8_t>(in.height * in.width * channels)};
  const int64_t n = in.height * in.width;
  const uint8_t* s = in.pixels.data();
  uint8_t* d = out.pixels.data();
  if (channels == 3) {
    for (int64_t i = 0; i < n; ++i) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
  } else {  // ITU-R 601 luma in integers: exact, and a replicated gray comes back unchanged
    for (int64_t i = 0; i < n; ++i)
      d[i] = static_cast<uint8_t>((299 * s[3 * i] + 587 * s[3 * i + 1] + 114 * s[3 * i + 2] + 500) / 1000);
  }
  return out;
}

}  // namespace

Image decode_png(std::span<const uint8_t> bytes, const std::string& name_for_errors) {
  CASTOR_CHECK(bytes.size() >= 8 && png_sig_cmp(bytes.data(), 0, 8) == 0, name_for_errors,
               bytes.empty() ? ": empty file" : ": not a PNG file (bad signature)");
  PngSource src{bytes.data(), bytes.size(), 0, ""};
  PngReadHandle h;
  h.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, &png_on_error, &png_on_warning);
  if (h.png != nullptr) h.info = png_create_info_struct(h.png);
  CASTOR_CHECK(h.info != nullptr, name_for_errors, ": cannot create the libpng reader");
  png_set_read_fn(h.png, &src, &png_on_read);
  Image img;
  if (!png_decode_into(h.png, h.info, src, img)) CASTOR_FAIL(name_for_errors, ": ", src.message);
  return img;
}

Image read_png(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return decode_png(bytes, path);
}

void write_png(const std::string& path, const Image& img) {
  check_image(img, path.c_str());
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = static_cast<png_uint_32>(img.width);
  pi.height = static_cast<png_uint_32>(img.height);
  pi.format = img.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  const int ok = png_image_write_to_file(&pi, path.c_str(), 0, img.pixels.data(), 0, nullptr);
  const std::string message = pi.message;
  png_image_free(&pi);
  CASTOR_CHECK(ok != 0, path, ": cannot write PNG (", message, ")");
}

std::vector<Image> read_idx_images(const std::string& path) {
  IdxFile idx = open_idx(path, 3);
  const int64_t n = idx.dims[0], h = idx.dims[1], w = idx.dims[2];
  std::vector<Image> images;
  images.reserve(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));  // grows past that only if the data is there
  for (int64_t i = 0; i < n; ++i) {
    Image& img = images.emplace_back(Image{h, w, 1, std::vector<uint8_t>(h * w)});
    idx_read(idx, img.pixels.data(), h * w);
  }
  idx_expect_end(idx);
  return images;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  IdxFile idx = open_idx(path, 1);
  std::vector<uint8_t> labels;
  while (static_cast<int64_t>(labels.size()) < idx.data_bytes) {  // chunked: a gzip header may lie
    const size_t old = labels.size();
    const int64_t chunk = std::min<int64_t>(idx.data_bytes - static_cast<int64_t>(old), 1 << 20);
    labels.resize(old + static_cast<size_t>(chunk));
    idx_read(idx, labels.data() + old, chunk);
  }
  idx_expect_end(idx);
  return labels;
}

Image fit_image(const Image& in, int64_t size, int64_t channels) {
  check_image(in, "fit_image");
  CASTOR_CHECK(channels == 1 || channels == 3, "fit_image: channels must be 1 or 3, got ", channels);
  CASTOR_CHECK(size > 0 && size * size <= kMaxImagePixels, "fit_image: bad size ", size);
  Image converted;
  if (in.channels != channels) converted = convert_channels(in, channels);
  if (in.height == size && in.width == size) {
    if (in.channels == channels) return in;
    return converted;
  }
  const Image& src = in.channels != channels ? converted : in;

  // Shorter side -> size, longer -> floor(size * long / short); then crop the centre.
  const int64_t H = in.height, W = in.width;
  const int64_t rh = H <= W ? size : size * H / W, rw = H <= W ? size * W / H : size;
  const Taps tx = make_taps(W, rw, (rw - size) / 2, size);
  const Taps ty = make_taps(H, rh, (rh - size) / 2, size);
  const int64_t row0 = ty.start.front(), rows = ty.start.back() + ty.len.back() - row0;
  std::vector<float> tmp(rows * size * channels);
  if (channels == 1)
    resample_rows<1>(src.pixels.data(), W, row0, rows, tx, tmp.data());
  else
    resample_rows<3>(src.pixels.data(), W, row0, rows, tx, tmp.data());
  Image out{size, size, channels, std::vector<uint8_t>(size * size * channels)};
  resample_cols(tmp.data(), row0, size * channels, ty, out.pixels.data());
  return out;
}

}  // namespace castor::io
