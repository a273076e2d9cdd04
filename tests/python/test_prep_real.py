#!/usr/bin/python3
"""castor prep on real data (scripts/media_data.sh, 40 spoken verses): the Fashion-MNIST test
set (first 2000 images, captions from data/fashion-mnist/classes.txt), spoken KJV verses, the
LibriVox clips (--split test), the fortunes text and the interleaved mix manifest. Every output
passes `castor data verify`; counts, splits, durations (against the stdlib wave module),
captions and transcripts (decoded with gpt2_reference.py and `castor tokenize --decode`),
pixels (against the IDX file read with gzip + struct) are checked, and the Fashion-MNIST prep
is byte-identical when run twice. Needs `bible` and `espeak-ng` (scripts/setup.sh)."""
import filecmp
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import wave

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import REPO, check, finish, run, tempdir  # noqa: E402
from gpt2_reference import Gpt2Encoder  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"
CLASSES = os.path.join(REPO, "data", "fashion-mnist", "classes.txt")
TEMPLATE = "a photo of a {}."
VERSES = 40
LIMIT = 2000
RATE = 16000


def read_idx(path):
    """(magic, dims, bytes) of a gzip IDX file, parsed here with struct."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return magic, dims, data[4 + 4 * ndim:]


def wav_seconds(path):
    with wave.open(path, "rb") as w:
        return w.getnframes() / w.getframerate(), w.getnframes(), w.getframerate()


def tsv(path):
    """(absolute wav path, text) per non-blank line, paths relative to the manifest."""
    base = os.path.dirname(path)
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return [(os.path.join(base, p), t) for p, t in rows]


def verify(name, out):
    p = run(["data", "verify", out], check=False)
    check(p.returncode == 0 and "verified" in p.stdout, f"{name}: castor data verify exit {p.returncode} "
                                                        f"{p.stderr.strip()[-300:]}")


def prep(name, pipeline, args, out):
    t = time.time()
    p = run(["prep", pipeline, *args, "--out", out, "--quiet"], check=False)
    check(p.returncode == 0, f"{name}: castor prep {pipeline} exit {p.returncode} ({time.time() - t:.1f} s) "
                             f"{p.stdout.strip()} {p.stderr.strip()[-300:]}")
    verify(name, out)
    return p


def shards(out):
    return [os.path.join(out, f) for f in sorted(os.listdir(out)) if f.endswith(".h5")]


def load(out):
    """Every document of a shard directory: list of (split, [(kind, payload, pair, flags)]),
    payload = token ids (text), pixels (image), (frames, num_samples) (audio)."""
    docs = []
    for path in shards(out):
        with h5py.File(path, "r") as f:
            tokens = f["text/tokens"][()]
            kind, start, length = f["segments/kind"][()], f["segments/start"][()], f["segments/length"][()]
            pair, flags, seg_off = f["segments/pair"][()], f["segments/flags"][()], f["segments/doc_offsets"][()]
            split = f["docs/split"][()]
            pixels = f["images/pixels"][()] if "images" in f else None
            ioff = f["images/offsets"][()] if "images" in f else None
            foff = f["audio/frame_offsets"][()] if "audio" in f else None
            nsamp = f["audio/num_samples"][()] if "audio" in f else None
            for d in range(len(seg_off) - 1):
                segs = []
                for s in range(seg_off[d], seg_off[d + 1]):
                    if kind[s] == 0:
                        payload = tokens[start[s]:start[s] + length[s]].tolist()
                    elif kind[s] == 1:
                        payload = pixels[ioff[start[s]]:ioff[start[s] + 1]]
                    else:
                        payload = (int(foff[start[s] + 1] - foff[start[s]]), int(nsamp[start[s]]))
                    segs.append((int(kind[s]), payload, int(pair[s] - seg_off[d]) if pair[s] >= 0 else -1,
                                 int(flags[s])))
                docs.append((int(split[d]), segs))
    return docs


def castor_decode(ids):
    p = subprocess.run([os.environ.get("CASTOR_BIN") or os.path.join(REPO, "build", "bin", "castor"), "tokenize",
                        "--decode"], input=" ".join(map(str, ids)), capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else None


def main():
    for tool in ("bible", "espeak-ng"):
        if shutil.which(tool) is None:
            sys.exit(f"test_prep_real: '{tool}' not found (run scripts/setup.sh)")
    enc = Gpt2Encoder()
    with open(CLASSES, encoding="utf-8") as f:
        classes = [line.strip() for line in f if line.strip()]
    with tempdir() as tmp:
        data = os.path.join(tmp, "media")
        t = time.time()
        p = subprocess.run(["bash", os.path.join(REPO, "scripts", "media_data.sh"), data, str(VERSES)],
                           capture_output=True, text=True)
        check(p.returncode == 0, f"scripts/media_data.sh {VERSES}: exit {p.returncode} ({time.time() - t:.1f} s) "
                                 f"{p.stdout.strip()} {p.stderr.strip()[-300:]}")
        if p.returncode != 0:
            finish()

        # ------------------------------------------------------------------ Fashion-MNIST
        images_gz = os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")
        labels_gz = os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")
        fm_args = ["--idx-images", images_gz, "--idx-labels", labels_gz, "--class-names", CLASSES,
                   "--caption-template", TEMPLATE, "--limit", str(LIMIT)]
        fm = [os.path.join(tmp, "fmnist-a"), os.path.join(tmp, "fmnist-b")]
        prep("fashion-mnist", "images", fm_args, fm[0])
        prep("fashion-mnist (again, 2 threads)", "images", fm_args + ["--threads", "2"], fm[1])
        a, b = (sorted(os.listdir(d)) for d in fm)
        check(a == b and a and all(filecmp.cmp(os.path.join(fm[0], f), os.path.join(fm[1], f), shallow=False)
                                   for f in a), f"fashion-mnist: two preps give byte-identical shards {a} / {b}")
        magic, dims, pix = read_idx(images_gz)
        lmagic, ldims, labels = read_idx(labels_gz)
        check(magic == 0x803 and lmagic == 0x801 and dims[0] == ldims[0] == 10000,
              f"IDX headers read here: images {magic:#x} {dims}, labels {lmagic:#x} {ldims}")
        docs = load(fm[0])
        check(len(docs) == LIMIT, f"fashion-mnist: {len(docs)} documents == {LIMIT}")
        bad_caption = bad_pixels = bad_layout = 0
        for i, (split, segs) in enumerate(docs):
            if [(k, pr) for k, _, pr, _ in segs] != [(1, 1), (0, -1)] or split != 0:
                bad_layout += 1
                continue
            want = TEMPLATE.format(classes[labels[i]])
            bad_caption += enc.decode(segs[1][1]).decode("utf-8") != want or segs[1][1] != enc.encode(want)
            bad_pixels += not np.array_equal(segs[0][1], np.frombuffer(pix, np.uint8, 784, i * 784))
        check(bad_layout == 0,
              f"fashion-mnist: every document is [image paired with 1, caption], train ({bad_layout} not)")
        check(bad_caption == 0, f"fashion-mnist: every caption decodes to '{TEMPLATE}' of its IDX label "
                                f"({bad_caption} of {len(docs)} wrong)")
        check(bad_pixels == 0, f"fashion-mnist: every image equals its 28x28 IDX pixels ({bad_pixels} differ)")
        for i in (0, 1, LIMIT - 1):
            got = castor_decode(docs[i][1][1][1])
            check(got == TEMPLATE.format(classes[labels[i]]), f"fashion-mnist: castor tokenize --decode of "
                                                              f"caption {i}: {got!r}")
        counts = np.bincount(np.frombuffer(labels, np.uint8)[:LIMIT], minlength=10)
        check(counts.min() > 100, f"fashion-mnist: all 10 classes among the first {LIMIT}: {counts.tolist()}")

        # ------------------------------------------------------------------ speech (espeak-ng verses)
        rows = tsv(os.path.join(data, "speech", "train.tsv"))
        out = os.path.join(tmp, "speech")
        prep("speech train", "audio", ["--manifest", os.path.join(data, "speech", "train.tsv")], out)
        docs = load(out)
        check(len(rows) == VERSES and len(docs) == len(rows), f"speech: {len(docs)} documents for {len(rows)} "
                                                              f"manifest lines ({VERSES} verses asked)")
        bad = []
        total_wave = total_castor = 0.0
        for (path, text), (split, segs) in zip(rows, docs):
            seconds, frames, rate = wav_seconds(path)
            want_samples = math.ceil(frames * RATE / rate)
            total_wave += seconds
            if [(k, pr) for k, _, pr, _ in segs] != [(2, 1), (0, -1)] or split != 0:
                bad.append(os.path.basename(path))
                continue
            (n_frames, n_samples), ids = segs[0][1], segs[1][1]
            total_castor += n_samples / RATE
            if n_samples != want_samples or n_frames != 1 + n_samples // 160 or ids != enc.encode(text):
                bad.append(os.path.basename(path))
        check(not bad, f"speech: audio paired with its transcript (ids as gpt2_reference), num_samples "
                       f"ceil(frames * 16000 / rate), frames 1 + n / 160 ({len(bad)} bad: {bad[:3]})")
        check(abs(total_castor - total_wave) < 1e-3 * len(rows),
              f"speech: {total_castor:.3f} s in the shards vs {total_wave:.3f} s of WAV (wave module)")

        # ------------------------------------------------------------------ LibriVox (real speech, eval)
        rows = tsv(os.path.join(data, "librivox", "eval.tsv"))
        out = os.path.join(tmp, "librivox")
        prep("librivox eval", "audio",
             ["--manifest", os.path.join(data, "librivox", "eval.tsv"), "--split", "test"], out)
        docs = load(out)
        check(len(docs) == 5 == len(rows), f"librivox: {len(docs)} clips == 5")
        wave_total = sum(wav_seconds(p)[0] for p, _ in rows)
        castor_total = sum(segs[0][1][1] for _, segs in docs if segs[0][0] == 2) / RATE
        check(abs(castor_total - wave_total) < 0.01, f"librivox: total {castor_total:.3f} s == {wave_total:.3f} s "
                                                     f"(wave module)")
        check(all(split == 2 for split, _ in docs), "librivox: every document has split test")
        check(all(len(segs) == 2 and enc.decode(segs[1][1]).decode() == text
                  for (_, text), (_, segs) in zip(rows, docs)),
              "librivox: transcripts decode to the manifest text")
        info = run(["data", "inspect", out]).stdout
        check(f"audio 5 clips, {wave_total:.2f} s" in info and "test 5" in info,
              f"librivox: castor data inspect reports 5 clips, {wave_total:.2f} s, test 5")

        # ------------------------------------------------------------------ fortunes (text)
        txt = os.path.join(data, "fortunes", "fortunes.txt")
        with open(txt, encoding="utf-8", errors="surrogateescape") as f:
            paragraphs = [p for p in f.read().split("\n\n") if p.strip()]
        out = os.path.join(tmp, "fortunes")
        prep("fortunes", "text", ["--input", txt], out)
        docs = load(out)
        check(len(paragraphs) > 500 and len(docs) == len(paragraphs),
              f"fortunes: {len(docs)} documents == {len(paragraphs)} blank-line separated fortunes")
        mismatched = [i for i, (p, (_, segs)) in enumerate(zip(paragraphs, docs))
                      if segs[0][1] != enc.encode(p.rstrip("\n").encode("utf-8", "surrogateescape") + b"\n")]
        check(not mismatched, f"fortunes: every document's ids equal gpt2_reference of the fortune + newline "
                              f"({len(mismatched)} differ, first {mismatched[:3]})")

        # ------------------------------------------------------------------ mix manifest
        manifest = os.path.join(data, "mix", "manifest.jsonl")
        with open(manifest, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        out = os.path.join(tmp, "mix")
        prep("mix", "mix", ["--input", manifest], out)
        docs = load(out)
        check(len(docs) == len(lines) == 64, f"mix: {len(docs)} documents == {len(lines)} manifest lines == 64")
        want_splits = [{"train": 0, "validation": 1, "test": 2}[d["split"]] for d in lines]
        check([s for s, _ in docs] == want_splits and want_splits.count(1) == 4,
              f"mix: splits as in the manifest ({want_splits.count(1)} validation)")
        bad = 0
        for d, (_, segs) in zip(lines, docs):
            want = [(0 if "text" in s else 1 if "image" in s else 2, s.get("pair", -1),
                     0 if s.get("loss", True) else 1) for s in d["segments"]]
            bad += [(k, pr, fl) for k, _, pr, fl in segs] != want
            bad += any(segs[j][1] != enc.encode(s["text"]) for j, s in enumerate(d["segments"]) if "text" in s)
        check(bad == 0, f"mix: segment kinds, pairs, no-loss flags and text ids as in the manifest ({bad} bad)")
        info = run(["data", "inspect", out]).stdout
        check("images 64 (50176 pixel bytes)" in info and "audio 64 clips" in info,
              "mix: castor data inspect reports 64 images of 28x28 and 64 audio clips")
    finish()


if __name__ == "__main__":
    main()
