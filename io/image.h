// Images for data preparation: PNG decode/encode (libpng), MNIST-style IDX files (plain or
// gzip), and fit_image, which converts channels and resizes + center-crops to a square with
// the antialiased bilinear filter of PIL / torch (interpolate(antialias=True)).
// Pixels are 8-bit, row-major H x W x C with interleaved channels; C is 1 (gray) or 3 (RGB).
// Every failure throws a one-line castor::Error that starts with the file name.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace castor::io {

struct Image {
  int64_t height = 0, width = 0, channels = 0;  // channels 1 (gray) or 3 (RGB)
  std::vector<uint8_t> pixels;                  // (height, width, channels)
};

// Largest image accepted by the decoders, in pixels (guards allocations against bad headers).
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

// Decodes any PNG (gray, gray+alpha, RGB, RGBA, palette; bit depths 1..16). Alpha (and tRNS
// transparency) is discarded, not composited; 16-bit samples are scaled to 8 bits (rounded);
// gamma chunks are ignored. Gray inputs give channels 1, colour and palette inputs 3.
Image decode_png(std::span<const uint8_t> bytes, const std::string& name_for_errors);
Image read_png(const std::string& path);
// Writes an 8-bit gray (channels 1) or RGB (channels 3) PNG.
void write_png(const std::string& path, const Image& img);

// IDX files (MNIST): big-endian magic 0x00000803 = uint8 images (N, H, W), 0x00000801 =
// uint8 labels (N), then the raw data. Plain or gzip-compressed (detected by its magic).
std::vector<Image> read_idx_images(const std::string& path);  // channels 1
std::vector<uint8_t> read_idx_labels(const std::string& path);

// Converts to `channels` (gray->RGB replicates; RGB->gray is the ITU-R 601 luma
// (299 R + 587 G + 114 B) / 1000, rounded), then resizes so the shorter side is `size` (the
// longer becomes floor(size * long / short), as torchvision's Resize) and center-crops
// size x size at offsets floor((W' - size) / 2), floor((H' - size) / 2). Resampling is
// separable bilinear, half-pixel centres, with a triangle filter widened by the factor when
// downscaling: torch.nn.functional.interpolate(mode="bilinear", antialias=True,
// align_corners=False) in float, then rounded to nearest. Only the cropped window is computed.
// An input that is already size x size with `channels` is returned unchanged.
Image fit_image(const Image& in, int64_t size, int64_t channels);

}  // namespace castor::io
