#!/usr/bin/python3
"""Multimodal corpus shards (schema 1.1, io/shard.h) against independent references, both ways.

Forward: PNG files (written here byte by byte with zlib + struct, every PNG row filter), WAV
files (stdlib wave: 16 kHz mono and stereo, one clip at 22.05 kHz) and two JSON lines mix
manifests go through `castor prep mix`; the shard is then read with h5py alone and compared
with what it must hold: the root attributes, the segment table (kinds, order, flags, pairs as
shard-global indices), text ids from the Python GPT-2 encoder (gpt2_reference.py), pixels
(bit-exact for 28x28 inputs, within the torch interpolate tolerance of test_image_resize.py
for resized ones), log-mel features from the numpy reference (logmel_reference.py; loosely
for the resampled 22.05 kHz clip, whose resampler differs), /docs and `castor data
inspect|verify`.

Reverse: a shard written by h5py alone from the layout is accepted by `castor data verify`
and `inspect`; copies with one invariant broken are refused with one line naming the file
and the dataset."""
import json
import os
import re
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import check, finish, run, tempdir  # noqa: E402
from gpt2_reference import Gpt2Encoder  # noqa: E402
from logmel_reference import DEFAULT as MEL, log_mel, read_wav_stdlib  # noqa: E402
from media_files import png_bytes, write_wav  # noqa: E402
from test_image_resize import reference as fit_reference  # noqa: E402

SIZE = 28
KINDS = {"text": 0, "image": 1, "audio": 2}
SPLITS = {"train": 0, "validation": 1, "test": 2}
MEL_TOL, MEL_FLOOR = 2e-3, -6.0  # as test_logmel.py: max |diff| over bins whose reference is > -6


# ---------------------------------------------------------------------------- media files

def smooth_image(rng, h, w, c=None):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w) if c is None else (h, w, c))
    for _ in range(4):
        fy, fx, ph = rng.uniform(0, 0.4), rng.uniform(0, 0.4), rng.uniform(0, 6.3)
        wave_ = np.sin(fy * y + fx * x + ph)
        img += wave_ if c is None else wave_[..., None] * rng.uniform(0.3, 1.0, size=c)
    return np.clip(np.round(127.5 + 30 * img), 0, 255).astype(np.uint8)


def chirp(rate, seconds, f0, f1, seed, noise=1e-3):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.4 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t ** 2))
    x += 0.05 * np.sin(2 * np.pi * 440.0 * t)
    if noise:
        x += noise * np.random.default_rng(seed).standard_normal(t.size)
    return x


def band_limited(rate, seconds):
    """Tones below 5 kHz with half-second-ish raised-cosine fades: nothing near the resampler's
    cut-off and little at the clip edges, where resamplers differ most."""
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t) + 0.1 * np.sin(2 * np.pi * 4100 * t)
    x += 0.1 * np.sin(2 * np.pi * (200 * t + 0.5 * 2500 / seconds * t ** 2))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.15)
    return x * 0.5 * (1 - np.cos(np.pi * fade))


def fft_resample(x, n_out):
    """Band-limited resampling by zero-padding / truncating the spectrum (periodic signal)."""
    spec = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    k = min(spec.size, out.size)
    out[:k] = spec[:k]
    return np.fft.irfft(out, n_out) * (n_out / x.size)


# ---------------------------------------------------------------------------- helpers

def one_line_error(name, args, *needles):
    p = run(args, check=False)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = p.returncode != 0 and len(lines) == 1 and lines[0].startswith("castor: error: rank 0: ")
    ok = ok and all(n in lines[0] for n in needles)
    check(ok, f"{name}: exit {p.returncode}, stderr {lines!r} (wanted {needles!r})")


def parse_inspect(text):
    """The counts of one `castor data inspect` block."""
    out = {}
    m = re.search(r"documents (\d+) \(train (\d+), validation (\d+), test (\d+)\), segments (\d+)", text)
    if m:
        out.update(documents=int(m[1]), train=int(m[2]), validation=int(m[3]), test=int(m[4]),
                   segments=int(m[5]))
    m = re.search(r"schema (\S+), tokenizer (\S+) \(vocab (\d+)\)", text)
    if m:
        out.update(schema=m[1], tokenizer=m[2], vocab=int(m[3]))
    for key, pattern in (("tokens", r"tokens (\d+)"), ("images", r"images (\d+) \((\d+) pixel bytes\)"),
                         ("audio", r"audio (\d+) clips, ([\d.]+) s, (\d+) frames")):
        m = re.search(pattern, text)
        if m:
            out[key] = tuple(float(g) if "." in g else int(g) for g in m.groups())
    return out


def mel_compare(name, got, want, loose=False):
    """Exact-input features: max |diff| < MEL_TOL over bins > MEL_FLOOR. Loose (different
    resampler): mean |diff| < 0.01 and 99th percentile < 0.1 over those bins."""
    check(got.shape == want.shape, f"{name}: features {got.shape} == reference {want.shape}")
    if got.shape != want.shape:
        return
    mask = want > MEL_FLOOR
    diff = np.abs(got.astype(np.float64) - want)[mask]
    worst, mean = float(diff.max()), float(diff.mean())
    p99 = float(np.percentile(diff, 99))
    check(mask.mean() > 0.3, f"{name}: {100 * mask.mean():.0f}% of bins above {MEL_FLOOR:g}")
    if loose:
        check(mean < 0.01 and p99 < 0.1, f"{name}: mean |castor - numpy| {mean:.2e} < 0.01, 99th percentile "
                                         f"{p99:.2e} < 0.1 (max {worst:.2e}; resamplers differ)")
    else:
        check(worst < MEL_TOL, f"{name}: max |castor - numpy| {worst:.2e} < {MEL_TOL:g} (mean {mean:.1e})")


# ---------------------------------------------------------------------------- forward

def make_inputs(root, rng):
    """Writes media and two manifests under root; returns (manifest paths, the documents as
    lists of (kind, value, pair, flags) with media values the expected decoded content)."""
    media = os.path.join(root, "media")
    os.makedirs(media)
    os.makedirs(os.path.join(root, "sub"))
    imgs = {
        "a.png": (smooth_image(rng, 28, 28), dict()),
        "b.png": (rng.integers(0, 256, size=(28, 28), dtype=np.uint8), dict(filters=(0, 1, 2, 3, 4), idat_parts=3)),
        "c.png": (smooth_image(rng, 40, 60), dict(filters=(4, 2))),  # 40x60 -> 28x42 -> crop 28x28
        "d_rgb.png": (rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8), dict(filters=(4, 1, 3))),
    }
    for name, (img, opts) in imgs.items():
        with open(os.path.join(media, name), "wb") as f:
            f.write(png_bytes(img, **opts))
    wavs = {
        "chirp.wav": (chirp(16000, 0.8, 60, 7000, seed=1), 16000),
        "short.wav": (chirp(16000, 0.35, 500, 3000, seed=2), 16000),
        "stereo.wav": (np.stack([chirp(16000, 0.5, 100, 4000, 3), chirp(16000, 0.5, 2000, 200, 4)], axis=1), 16000),
        "tones22k.wav": (band_limited(22050, 1.0), 22050),
    }
    for name, (x, rate) in wavs.items():
        write_wav(os.path.join(media, name), x, rate)

    # (manifest line object, written raw UTF-8?) per document; blank lines are skipped by castor.
    docs_a = [
        {"segments": [{"text": "Look at this picture."}, {"image": "media/a.png", "pair": 2},
                      {"text": " It shows a smooth gradient."}], "split": "train"},
        None,  # a blank line
        {"segments": [{"text": "Transcribe:", "loss": False}, {"audio": "media/chirp.wav", "pair": 2},
                      {"text": " a rising chirp with a quiet tone"}], "split": "validation"},
        [{"image": "media/c.png"}, {"text": "An unpaired image, caf\u00e9 na\u00efve \u2014 \U0001F642"}],
        {"segments": [{"audio": "media/tones22k.wav", "pair": 1}, {"text": " tones at 22.05 kHz", "loss": True},
                      {"image": "media/b.png", "pair": 1}, {"text": "", "loss": False}], "split": "test"},
        {"segments": [{"text": "Just text, no media.\nSecond line\twith a tab."}]},
        {"segments": [{"image": "media/d_rgb.png", "pair": 1}, {"text": "An RGB picture, stored gray."},
                      {"audio": "media/stereo.wav"}], "split": "train"},
    ]
    docs_b = [
        {"segments": [{"text": "From the second manifest \u00e0 la carte."},
                      {"audio": "../media/short.wav", "pair": 0}], "split": "test"},
    ]
    manifests = [os.path.join(root, "manifest.jsonl"), os.path.join(root, "sub", "more.jsonl")]
    with open(manifests[0], "w", encoding="utf-8") as f:
        for i, d in enumerate(docs_a):
            f.write("\n" if d is None else json.dumps(d, ensure_ascii=(i % 2 == 0)) + "\n")
    with open(manifests[1], "w", encoding="utf-8") as f:
        for d in docs_b:
            f.write(json.dumps(d) + "\n")

    expected = []
    for source, (docs, base) in enumerate(((docs_a, root), (docs_b, os.path.join(root, "sub")))):
        for d in docs:
            if d is None:
                continue
            segs = d["segments"] if isinstance(d, dict) else d
            split = d.get("split", "train") if isinstance(d, dict) else "train"
            doc = []
            for s in segs:
                if "text" in s:
                    doc.append(dict(kind="text", text=s["text"], flags=0 if s.get("loss", True) else 1, pair=-1))
                else:
                    kind = "image" if "image" in s else "audio"
                    path = os.path.normpath(os.path.join(base, s[kind]))
                    doc.append(dict(kind=kind, path=path, flags=0, pair=s.get("pair", -1)))
            expected.append(dict(segments=doc, split=split, source=source))
    return manifests, expected, imgs, wavs


def expected_image(path, imgs):
    img = imgs[os.path.basename(path)][0]
    x = img[..., None] if img.ndim == 2 else img
    return fit_reference(x, SIZE, 1), x.shape


def check_forward(tmp):
    rng = np.random.default_rng(20240611)
    enc = Gpt2Encoder()
    root = os.path.join(tmp, "in")
    manifests, docs, imgs, wavs = make_inputs(root, rng)
    out = os.path.join(tmp, "shards")
    p = run(["prep", "mix", "--input", *manifests, "--out", out, "--size", str(SIZE), "--channels", "1", "--quiet"])
    print(p.stdout.strip())
    shard = os.path.join(out, "shard-00000.h5")
    check(sorted(os.listdir(out)) == ["shard-00000.h5"], f"prep mix wrote one shard: {sorted(os.listdir(out))}")

    segs = [s for d in docs for s in d["segments"]]
    n_docs, n_segs = len(docs), len(segs)
    n_images = sum(s["kind"] == "image" for s in segs)
    n_audio = sum(s["kind"] == "audio" for s in segs)
    want_tokens = [enc.encode(s["text"]) if s["kind"] == "text" else None for s in segs]
    n_tokens = sum(len(t) for t in want_tokens if t is not None)

    with h5py.File(shard, "r") as f:
        # castor writes fixed-length UTF-8 strings (stored in checksummed object headers):
        # h5py returns them as bytes.
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        check(a["castor_format"] == "corpus-shard" and a["schema_version"] == "1.1",
              f"root: castor_format {a['castor_format']!r}, schema_version {a['schema_version']!r}")
        check(a["tokenizer"] == "gpt2" and int(a["vocab_size"]) == 50257 and int(a["eot_id"]) == 50256,
              f"root: tokenizer {a['tokenizer']!r}, vocab_size {a['vocab_size']}, eot_id {a['eot_id']}")
        for key in ("vocab_size", "eot_id", "num_documents", "num_tokens", "num_segments", "num_images", "num_audio"):
            check(a[key].dtype == np.int64, f"root attribute {key} is int64 ({a[key].dtype})")
        counts = {k: int(a[k]) for k in ("num_documents", "num_tokens", "num_segments", "num_images", "num_audio")}
        want_counts = dict(num_documents=n_docs, num_tokens=n_tokens, num_segments=n_segs, num_images=n_images,
                           num_audio=n_audio)
        check(counts == want_counts, f"root counts {counts} == {want_counts}")
        sources = [s.decode() if isinstance(s, bytes) else s for s in f["meta"].attrs["sources"]]
        check(sources == manifests, f"/meta sources {sources} == the manifests")

        # Segment table.
        kind = f["segments/kind"][()]
        flags = f["segments/flags"][()]
        start = f["segments/start"][()]
        length = f["segments/length"][()]
        pair = f["segments/pair"][()]
        seg_off = f["segments/doc_offsets"][()]
        check(kind.dtype == np.uint8 and flags.dtype == np.uint8 and pair.dtype == np.int64 and
              start.dtype == np.int64, f"segment column types {kind.dtype} {flags.dtype} {start.dtype} {pair.dtype}")
        want_seg_off = np.cumsum([0] + [len(d["segments"]) for d in docs])
        check(np.array_equal(seg_off, want_seg_off), f"/segments/doc_offsets {seg_off.tolist()}")
        check(kind.tolist() == [KINDS[s["kind"]] for s in segs], f"/segments/kind {kind.tolist()}")
        check(flags.tolist() == [s["flags"] for s in segs], f"/segments/flags (bit 1 = no loss) {flags.tolist()}")
        want_pair = [-1 if s["pair"] < 0 else int(want_seg_off[d]) + s["pair"]
                     for d, doc in enumerate(docs) for s in doc["segments"]]
        check(pair.tolist() == want_pair, f"/segments/pair (shard-global) {pair.tolist()} == {want_pair}")

        # Text: segment ranges continue each document, ids equal the Python GPT-2 encoder.
        tokens = f["text/tokens"][()]
        doc_off = f["text/doc_offsets"][()]
        check(tokens.dtype == np.uint16 and tokens.size == n_tokens, f"/text/tokens uint16 x {tokens.size}")
        want_doc_off = np.cumsum([0] + [sum(len(enc.encode(s["text"])) for s in d["segments"] if s["kind"] == "text")
                                        for d in docs])
        check(np.array_equal(doc_off, want_doc_off), f"/text/doc_offsets {doc_off.tolist()}")
        pos, ok_ranges, ok_ids, item = 0, True, True, {"image": 0, "audio": 0}
        for i, s in enumerate(segs):
            if s["kind"] == "text":
                ok_ranges &= bool(start[i] == pos and length[i] == len(want_tokens[i]))
                ok_ids &= tokens[start[i]:start[i] + length[i]].tolist() == want_tokens[i]
                pos += len(want_tokens[i])
            else:
                ok_ranges &= bool(start[i] == item[s["kind"]] and length[i] == 1)
                item[s["kind"]] += 1
        check(ok_ranges, "text segments: start/length continue /text/tokens in order; media: item k, length 1")
        check(ok_ids, "text ids equal gpt2_reference.Gpt2Encoder for every segment (incl. non-ASCII, empty)")

        # Images.
        pixels = f["images/pixels"][()]
        ioff = f["images/offsets"][()]
        shape = f["images/shape"][()]
        check(pixels.dtype == np.uint8 and shape.dtype == np.int32 and shape.shape == (n_images, 3),
              f"/images: pixels {pixels.dtype}, shape {shape.dtype} {shape.shape}")
        check(np.array_equal(ioff, np.arange(n_images + 1) * SIZE * SIZE), f"/images/offsets {ioff.tolist()}")
        check((shape == [SIZE, SIZE, 1]).all(), f"/images/shape all {SIZE}x{SIZE}x1")
        for k, s in enumerate(x for x in segs if x["kind"] == "image"):
            got = pixels[ioff[k]:ioff[k + 1]].reshape(shape[k]).astype(np.int64)
            want, src_shape = expected_image(s["path"], imgs)
            diff = np.abs(got - want.astype(np.int64))
            name = f"image {k} ({os.path.basename(s['path'])}, {'x'.join(map(str, src_shape))})"
            if src_shape == (SIZE, SIZE, 1):
                check(diff.max() == 0, f"{name}: pixels bit-exact (PNG decode + identity fit)")
            else:
                check(diff.max() <= 1 and diff.mean() < 0.05,
                      f"{name}: within torch interpolate tolerance: max {diff.max()}, mean {diff.mean():.4f}")

        # Audio.
        g = f["audio"]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        check(attrs.get("feature") == "log-mel", f"/audio feature {attrs.get('feature')!r}")
        check(all(float(attrs[k]) == MEL[k] for k in MEL), f"/audio attributes {attrs}")
        feats = f["audio/features"][()]
        foff = f["audio/frame_offsets"][()]
        nsamp = f["audio/num_samples"][()]
        check(feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[1] == MEL["n_mels"],
              f"/audio/features {feats.dtype} {feats.shape}")
        check(foff.size == n_audio + 1 and foff[0] == 0 and foff[-1] == feats.shape[0],
              f"/audio/frame_offsets {foff.tolist()}")
        for k, s in enumerate(x for x in segs if x["kind"] == "audio"):
            got = feats[foff[k]:foff[k + 1]]
            rate, x = read_wav_stdlib(s["path"])
            name = f"audio {k} ({os.path.basename(s['path'])}, {rate} Hz)"
            if rate == MEL["sample_rate"]:
                check(nsamp[k] == x.size, f"{name}: num_samples {nsamp[k]} == {x.size}")
                mel_compare(name, got, log_mel(x, MEL))
            else:
                n = -(-x.size * MEL["sample_rate"] // rate)  # ceil
                check(nsamp[k] == n, f"{name}: num_samples {nsamp[k]} == ceil({x.size} * 16000 / {rate}) = {n}")
                check(got.shape[0] == 1 + n // MEL["hop_length"], f"{name}: {got.shape[0]} frames")
                mel_compare(name, got, log_mel(fft_resample(x, n), MEL), loose=True)

        # Documents.
        split = f["docs/split"][()]
        source = f["docs/source"][()]
        names = [s.decode() if isinstance(s, bytes) else s for s in f["docs/split"].attrs["names"]]
        check(names == ["train", "validation", "test"], f"/docs/split names {names}")
        check(split.tolist() == [SPLITS[d["split"]] for d in docs], f"/docs/split {split.tolist()}")
        check(source.dtype == np.int32 and source.tolist() == [d["source"] for d in docs],
              f"/docs/source {source.tolist()}")

    # castor's own view.
    v = run(["data", "verify", shard], check=False)
    check(v.returncode == 0 and f"{n_docs} documents, {n_tokens} tokens, {n_images} images, {n_audio} audio clips"
          in v.stdout, f"castor data verify: exit {v.returncode}, {v.stdout.strip()!r} {v.stderr.strip()!r}")
    info = parse_inspect(run(["data", "inspect", shard]).stdout)
    seconds = sum(int(x) for x in nsamp) / MEL["sample_rate"]
    want = dict(schema="1.1", tokenizer="gpt2", vocab=50257, documents=n_docs, segments=n_segs, tokens=(n_tokens,),
                images=(n_images, n_images * SIZE * SIZE), train=sum(d["split"] == "train" for d in docs),
                validation=sum(d["split"] == "validation" for d in docs), test=sum(d["split"] == "test" for d in docs))
    check(all(info.get(k) == v for k, v in want.items()), f"castor data inspect counts {info} match {want}")
    audio = info.get("audio", (0, 0.0, 0))
    check(audio[0] == n_audio and abs(audio[1] - seconds) < 0.006 and audio[2] == int(foff[-1]),
          f"castor data inspect audio {audio} == ({n_audio}, {seconds:.2f}, {int(foff[-1])})")


# ---------------------------------------------------------------------------- reverse

def write_h5py_shard(path, rng, enc, libver="v110"):
    """A schema 1.1 shard written from the layout with h5py only: 4 documents mixing text,
    images (two sizes, gray and RGB) and float16 audio features; two sources. castor reads
    the HDF5 1.10 format (checksummed metadata), hence libver."""
    docs = [
        dict(split=0, source=0, segments=[("text", "A caption first.", 0), ("image", (28, 28, 1), 0),
                                          ("text", " and after.", 1)], pairs={1: 0}),
        dict(split=1, source=1, segments=[("audio", 37, 0), ("text", "the transcript", 0)], pairs={0: 1}),
        dict(split=2, source=-1, segments=[("text", "Only text here, \u00fcnicode too.", 0)], pairs={}),
        dict(split=0, source=0, segments=[("image", (16, 24, 3), 0), ("audio", 5, 0), ("text", "", 1),
                                          ("text", "two images, two clips", 0), ("image", (8, 8, 1), 0),
                                          ("audio", 12, 0)], pairs={0: 3, 5: 3}),
    ]
    tokens, kinds, flags, starts, lengths, pairs, seg_off, doc_off = [], [], [], [], [], [], [0], [0]
    pixels, ioff, ishape, feats, foff, nsamp = [], [0], [], [], [0], []
    for d in docs:
        first = len(kinds)
        for j, (kind, value, fl) in enumerate(d["segments"]):
            kinds.append(KINDS[kind])
            flags.append(fl)
            pairs.append(first + d["pairs"][j] if j in d["pairs"] else -1)
            if kind == "text":
                ids = enc.encode(value)
                starts.append(len(tokens))
                lengths.append(len(ids))
                tokens += ids
            elif kind == "image":
                starts.append(len(ishape))
                lengths.append(1)
                pixels.append(rng.integers(0, 256, size=int(np.prod(value)), dtype=np.uint8))
                ioff.append(ioff[-1] + pixels[-1].size)
                ishape.append(value)
            else:
                starts.append(len(nsamp))
                lengths.append(1)
                feats.append(rng.normal(-2, 1, size=(value, MEL["n_mels"])).astype(np.float16))
                foff.append(foff[-1] + value)
                nsamp.append((value - 1) * MEL["hop_length"] + 7)
        seg_off.append(len(kinds))
        doc_off.append(len(tokens))
    with h5py.File(path, "w", libver=libver) as f:
        # Fixed-length strings (numpy bytes): castor refuses variable-length ones in shards.
        f.attrs["castor_format"] = np.bytes_("corpus-shard")
        f.attrs["schema_version"] = np.bytes_("1.1")
        f.attrs["tokenizer"] = np.bytes_("gpt2")
        f.attrs["vocab_size"] = np.int64(50257)
        f.attrs["eot_id"] = np.int64(50256)
        f.attrs["num_documents"] = np.int64(len(docs))
        f.attrs["num_tokens"] = np.int64(len(tokens))
        f.attrs["num_segments"] = np.int64(len(kinds))
        f.attrs["num_images"] = np.int64(len(ishape))
        f.attrs["num_audio"] = np.int64(len(nsamp))
        f.create_dataset("text/tokens", data=np.array(tokens, dtype=np.uint16))
        f.create_dataset("text/doc_offsets", data=np.array(doc_off, dtype=np.int64))
        for name, data, dt in (("kind", kinds, np.uint8), ("flags", flags, np.uint8), ("start", starts, np.int64),
                               ("length", lengths, np.int64), ("pair", pairs, np.int64),
                               ("doc_offsets", seg_off, np.int64)):
            f.create_dataset("segments/" + name, data=np.array(data, dtype=dt))
        f.create_dataset("images/pixels", data=np.concatenate(pixels))
        f.create_dataset("images/offsets", data=np.array(ioff, dtype=np.int64))
        f.create_dataset("images/shape", data=np.array(ishape, dtype=np.int32))
        f.create_dataset("audio/features", data=np.concatenate(feats))
        f.create_dataset("audio/frame_offsets", data=np.array(foff, dtype=np.int64))
        f.create_dataset("audio/num_samples", data=np.array(nsamp, dtype=np.int64))
        g = f["audio"]
        g.attrs["feature"] = np.bytes_("log-mel")
        for k, v in MEL.items():
            g.attrs[k] = float(v) if k.startswith("f_") else np.int64(v)
        f.create_dataset("docs/source", data=np.array([d["source"] for d in docs], dtype=np.int32))
        f.create_dataset("docs/split", data=np.array([d["split"] for d in docs], dtype=np.uint8))
        f["docs/split"].attrs["names"] = np.array([b"train", b"validation", b"test"])
        f.create_group("meta").attrs["sources"] = np.array([b"a.jsonl", b"b.jsonl"])
    return dict(documents=len(docs), segments=len(kinds), tokens=len(tokens), images=len(ishape),
                pixel_bytes=ioff[-1], audio=len(nsamp), frames=foff[-1], samples=sum(nsamp),
                splits=[sum(d["split"] == s for d in docs) for s in range(3)])


def check_reverse(tmp):
    rng = np.random.default_rng(7)
    enc = Gpt2Encoder()
    good = os.path.join(tmp, "h5py-shard.h5")
    w = write_h5py_shard(good, rng, enc)
    v = run(["data", "verify", good], check=False)
    check(v.returncode == 0 and f"{w['documents']} documents, {w['tokens']} tokens, {w['images']} images, "
                                f"{w['audio']} audio clips" in v.stdout,
          f"castor data verify accepts the h5py-written shard: exit {v.returncode}, {v.stdout.strip()!r} "
          f"{v.stderr.strip()!r}")
    p = run(["data", "inspect", good], check=False)
    info = parse_inspect(p.stdout)
    want = dict(schema="1.1", tokenizer="gpt2", vocab=50257, documents=w["documents"], segments=w["segments"],
                tokens=(w["tokens"],), images=(w["images"], w["pixel_bytes"]), train=w["splits"][0],
                validation=w["splits"][1], test=w["splits"][2])
    check(p.returncode == 0 and all(info.get(k) == v for k, v in want.items()),
          f"castor data inspect of the h5py shard: {info} matches {want}")
    audio = info.get("audio", (0, 0.0, 0))
    check(audio[0] == w["audio"] and audio[2] == w["frames"] and abs(audio[1] - w["samples"] / 16000) < 0.006,
          f"castor data inspect audio {audio}: {w['audio']} clips, {w['frames']} frames")

    # The same shard in HDF5's legacy format (no metadata checksums) is refused up front.
    legacy = os.path.join(tmp, "legacy.h5")
    write_h5py_shard(legacy, np.random.default_rng(7), enc, libver="earliest")
    p = run(["data", "verify", legacy], check=False)
    check(p.returncode == 1 and "legacy.h5: HDF5 superblock version 0" in p.stderr and 'libver="v110"' in p.stderr,
          f"a legacy-format shard is refused naming the fix: {p.stderr.strip()!r}")

    def broken(name, edit, *needles):
        path = os.path.join(tmp, name + ".h5")
        shutil.copy(good, path)
        with h5py.File(path, "r+") as f:
            edit(f)
        one_line_error(f"verify refuses {name}", ["data", "verify", path], name + ".h5", *needles)

    def bump_offset(f):
        f["images/offsets"][1] = f["images/offsets"][1] + 1

    def pair_to_image(f):
        p = f["segments/pair"][()]
        p[1] = -1
        p[0] = 1  # a text segment with a pair
        f["segments/pair"][...] = p

    def pair_not_text(f):
        p = f["segments/pair"][()]
        k = f["segments/kind"][()]
        image = int(np.flatnonzero(k == 1)[0])
        p[image] = image  # an image paired with itself
        f["segments/pair"][...] = p

    def short_frames(f):
        f["audio/frame_offsets"][-1] = f["audio/frame_offsets"][-1] - 1

    def bad_split(f):
        f["docs/split"][2] = 7

    def bad_start(f):
        k = f["segments/kind"][()]
        s = f["segments/start"][()]
        s[int(np.flatnonzero(k == 2)[0])] = 2
        f["segments/start"][...] = s

    def bad_kind(f):
        f["segments/kind"][0] = 9

    def bad_source(f):
        f["docs/source"][0] = 5

    def nan_feature(f):
        f["audio/features"][3, 4] = np.nan

    def wrong_count(f):
        f.attrs["num_images"] = np.int64(4)

    def bad_shape(f):
        f["images/shape"][1, 2] = 2

    broken("image-offset", bump_offset, "/images/")
    broken("text-pair", pair_to_image, "/segments/pair")
    broken("pair-not-text", pair_not_text, "/segments/pair", "not a text segment")
    broken("frame-offsets", short_frames, "/audio/frame_offsets")
    broken("split-7", bad_split, "/docs/split")
    broken("audio-start", bad_start, "/segments/start")
    broken("kind-9", bad_kind, "/segments/kind")
    broken("source-5", bad_source, "/docs/source")
    broken("nan-feature", nan_feature, "/audio/features", "not finite")
    broken("num-images", wrong_count, "/images/offsets")  # the table that disagrees with the count
    broken("channels-2", bad_shape, "/images/shape")

    def vlen_string(f):
        f.attrs["tokenizer"] = "gpt2"  # a Python str: h5py writes a variable-length string

    broken("vlen-string", vlen_string, "attribute /tokenizer", "variable-length string")


def main():
    with tempdir() as tmp:
        check_forward(tmp)
        check_reverse(tmp)
    finish()


if __name__ == "__main__":
    main()
