"""Small media files written byte by byte for the prep tests, independently of castor's
decoders: PNG (zlib + struct, every row filter), WAV (stdlib wave) and MNIST-style IDX."""
import gzip
import struct
import wave
import zlib

import numpy as np


def png_bytes(img, filters=(0,), idat_parts=1):
    """An 8-bit PNG of img (H, W) gray or (H, W, 3) RGB; row y uses filter filters[y % len]
    (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth); the zlib stream is split over idat_parts IDATs."""
    img = np.asarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    bpp = 1 if img.ndim == 2 else img.shape[2]
    rows = img.reshape(h, w * bpp).astype(np.int64)
    raw = bytearray()
    prev = np.zeros(w * bpp, dtype=np.int64)
    for y in range(h):
        x = rows[y]
        a = np.concatenate([np.zeros(bpp, dtype=np.int64), x[:-bpp]])  # left
        c = np.concatenate([np.zeros(bpp, dtype=np.int64), prev[:-bpp]])  # upper left
        b = prev
        ft = filters[y % len(filters)]
        if ft == 0:
            out = x
        elif ft == 1:
            out = x - a
        elif ft == 2:
            out = x - b
        elif ft == 3:
            out = x - (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            out = x - pred
        raw.append(ft)
        raw += bytes((out % 256).astype(np.uint8))
        prev = x

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    z = zlib.compress(bytes(raw), 9)
    cut = [len(z) * i // idat_parts for i in range(idat_parts + 1)]
    color = 0 if bpp == 1 else 2
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
            b"".join(chunk(b"IDAT", z[cut[i]:cut[i + 1]]) for i in range(idat_parts)) + chunk(b"IEND", b""))


def write_wav(path, samples, rate):
    """16-bit PCM; samples (n,) mono or (n, channels) in [-1, 1]."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_idx(path, array, compress=False):
    """IDX (MNIST) file of a uint8 array: magic 0x0000_08_<ndim>, big-endian dims, data."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(">I", 0x0800 | a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(data)
