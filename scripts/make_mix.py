#!/usr/bin/env python3
"""Writes a JSON lines manifest of interleaved documents for `castor prep mix`, from real
data: Fashion-MNIST images (saved as PNG, captioned with their class names) and spoken KJV
verses (a speech manifest from scripts/media_data.sh). Each document mixes text, an image
with its caption and a spoken verse with its transcript. Deterministic.
Usage: make_mix.py --out DIR --speech speech/train.tsv [--count N]"""
import argparse
import gzip
import json
import os
import struct
import zlib

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
FMNIST = "/usr/share/datasets/fashion-mnist"


def write_png(path, rows, width, height):
    """8-bit grayscale PNG, no filter."""
    raw = b"".join(b"\x00" + bytes(rows[y * width:(y + 1) * width]) for y in range(height))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--speech", required=True)
    ap.add_argument("--count", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "png"), exist_ok=True)
    with gzip.open(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")) as f:
        _, n, h, w = struct.unpack(">IIII", f.read(16))
        pixels = f.read(a.count * h * w)
    with gzip.open(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = f.read(a.count)
    speech_dir = os.path.dirname(os.path.abspath(a.speech))
    with open(a.speech, encoding="utf-8") as f:
        speech = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    with open(os.path.join(a.out, "manifest.jsonl"), "w", encoding="utf-8") as out:
        for i in range(a.count):
            png = os.path.join("png", "fmnist-%05d.png" % i)
            write_png(os.path.join(a.out, png), pixels[i * h * w:(i + 1) * h * w], w, h)
            wav, verse = speech[i % len(speech)]
            wav_rel = os.path.relpath(os.path.join(speech_dir, wav), a.out)
            segments = [
                {"text": "Look at this picture."},
                {"image": png, "pair": 2},
                {"text": " It shows a %s." % CLASSES[labels[i]].lower()},
                {"text": " Now listen:", "loss": False},
                {"audio": wav_rel, "pair": 5},
                {"text": " " + verse},
            ]
            doc = {"segments": segments, "split": "validation" if i % 16 == 15 else "train"}
            out.write(json.dumps(doc) + "\n")


if __name__ == "__main__":
    main()
