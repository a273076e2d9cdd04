#!/usr/bin/python3
# PyTorch parity of castor::io::fit_image: for random gray/RGB images (noise and smooth; upscale,
# downscale, non-square) the C++ result, made by tests/tools/image_tool, is compared with
# torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False) in float64
# + the same channel conversion, center crop and rounding: max |diff| <= 1, mean |diff| < 0.05.
# The tool is found through $CASTOR_IMAGE_TOOL (set by ctest), else under build*/tests/.
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import check, finish, tempdir, test_tool  # noqa: E402

# (height, width, channels, size, out_channels)
CASES = [
    (28, 28, 1, 64, 1),     # upscale
    (28, 28, 1, 64, 3),     # upscale, gray -> RGB
    (100, 60, 3, 32, 3),    # downscale, tall
    (60, 100, 3, 32, 3),    # downscale, wide
    (100, 60, 3, 32, 1),    # downscale, RGB -> gray
    (37, 53, 3, 24, 3),     # fractional factors
    (17, 300, 1, 16, 1),    # extreme aspect: crop of a long strip
    (64, 48, 3, 64, 3),     # upscale one axis, crop the other
    (33, 32, 3, 32, 3),     # slight downscale
    (5, 9, 1, 40, 1),       # large upscale
    (480, 640, 3, 224, 3),  # typical photo
    (224, 224, 3, 224, 3),  # identity
]


def find_tool():
    return test_tool("CASTOR_IMAGE_TOOL", "castor_image_tool")


def make_image(rng, h, w, c, smooth):
    if not smooth:
        return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
    # Sums of a few random sinusoids: smooth detail at several scales.
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, c))
    for ch in range(c):
        for _ in range(4):
            fy, fx, ph = rng.uniform(0, 0.3), rng.uniform(0, 0.3), rng.uniform(0, 6.3)
            img[:, :, ch] += np.sin(fy * y + fx * x + ph)
    return np.clip(np.round(127.5 + 32 * img), 0, 255).astype(np.uint8)


def reference(img, size, out_c):
    x = img.astype(np.int64)
    if x.shape[2] == 3 and out_c == 1:  # ITU-R 601 luma, rounded, before resizing
        x = ((299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000)[..., None]
    elif x.shape[2] == 1 and out_c == 3:
        x = np.repeat(x, 3, axis=2)
    h, w = x.shape[:2]
    if h == size and w == size:
        return x.astype(np.uint8)
    rh, rw = (size, size * w // h) if h <= w else (size * h // w, size)  # torchvision's Resize(int)
    t = torch.from_numpy(x).permute(2, 0, 1)[None].double()
    y = F.interpolate(t, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    oy, ox = (rh - size) // 2, (rw - size) // 2
    y = y[0, :, oy:oy + size, ox:ox + size].round().clamp(0, 255)
    return y.permute(1, 2, 0).numpy().astype(np.uint8)


def castor_fit(tool, d, img, size, out_c):
    h, w, c = img.shape
    src, dst = os.path.join(d, "in.raw"), os.path.join(d, "out.raw")
    img.tofile(src)
    p = subprocess.run([tool, "fit", src, str(h), str(w), str(c), str(size), str(out_c), dst],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"image_tool failed ({p.returncode}): {p.stderr}")
    return np.fromfile(dst, dtype=np.uint8).reshape(size, size, out_c)


def main():
    torch.set_num_threads(1)
    tool = find_tool()
    rng = np.random.default_rng(1234)
    worst_max, total_diff, total_n = 0, 0.0, 0
    with tempdir() as d:
        for h, w, c, size, out_c in CASES:
            for smooth in (False, True):
                img = make_image(rng, h, w, c, smooth)
                got = castor_fit(tool, d, img, size, out_c).astype(np.int64)
                want = reference(img, size, out_c).astype(np.int64)
                diff = np.abs(got - want)
                worst_max = max(worst_max, int(diff.max()))
                total_diff += float(diff.sum())
                total_n += diff.size
                name = f"{h}x{w}x{c} -> {size}x{size}x{out_c} ({'smooth' if smooth else 'noise'})"
                check(diff.max() <= 1 and diff.mean() < 0.05,
                      f"{name:40s} max |diff| {diff.max()}, mean |diff| {diff.mean():.5f}, "
                      f"differing {np.count_nonzero(diff)}/{diff.size}")
                if h == size and w == size and c == out_c:
                    check(np.array_equal(got, img), f"{name}: identity is bit-exact")
    print(f"overall: max |diff| {worst_max}, mean |diff| {total_diff / total_n:.6f} over {total_n} values")
    finish()


if __name__ == "__main__":
    main()
