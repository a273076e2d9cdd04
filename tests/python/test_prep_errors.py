#!/usr/bin/python3
"""Bad input to `castor prep` and `castor data`: every case must exit non-zero with exactly one
stderr line "castor: error: rank 0: ..." naming the file at fault (and the manifest line or the
sample where there is one). After every failing prep, the output directory must hold no shard
under the failing shard's final name and no *.tmp file: prep writes <out>/<prefix>-NNNNN.h5
through <name>.tmp + rename. When the failure comes after some shards were completed (tiny
--shard-size), those shards are whole (`castor data verify` passes) and nothing half-written is
left. Also: prep output is byte-identical for --threads 1 and --threads 2."""
import filecmp
import json
import os
import shutil
import sys
import warnings

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import check, finish, run, tempdir  # noqa: E402
from media_files import png_bytes, write_idx, write_wav  # noqa: E402

RNG = np.random.default_rng(99)


def expect_error(name, args, *needles):
    """Runs castor; checks exit != 0 and one stderr line with the prefix and every needle."""
    p = run(args, check=False)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = p.returncode != 0 and len(lines) == 1 and lines[0].startswith("castor: error: rank 0: ")
    ok = ok and all(n in lines[0] for n in needles)
    check(ok, f"{name}: exit {p.returncode}, stderr {lines!r} (wanted {needles!r})")
    return p


def out_dir_clean(name, out, failing=("shard-00000.h5",), allowed=()):
    """No *.tmp and no shard under a failing shard's final name; only `allowed` shards."""
    files = sorted(os.listdir(out)) if os.path.isdir(out) else []
    tmp = [f for f in files if f.endswith(".tmp")]
    bad = [f for f in files if f in failing]
    extra = [f for f in files if f.endswith(".h5") and f not in allowed]
    check(not tmp and not bad and not extra,
          f"{name}: output dir holds no *.tmp, no {'/'.join(failing)}, no unexpected shard: {files}")


def prep_fails(name, pipeline, args, out, *needles):
    expect_error(name, ["prep", pipeline, *args, "--out", out, "--quiet"], *needles)
    out_dir_clean(name, out)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def jsonl(path, docs):
    return write(path, "".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))


def tone(rate=16000, seconds=0.3, f=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return 0.3 * np.sin(2 * np.pi * f * t)


def media(root):
    """Good and bad media files under root/media; returns a dict name -> path."""
    d = os.path.join(root, "media")
    os.makedirs(d)
    p = {}
    for i in range(4):
        p[f"img{i}"] = write(os.path.join(d, f"img{i}.png"),
                             png_bytes(RNG.integers(0, 256, size=(28, 28), dtype=np.uint8), filters=(0, 1, 4)))
    good = png_bytes(RNG.integers(0, 256, size=(28, 28), dtype=np.uint8))
    p["garbage_png"] = write(os.path.join(d, "garbage.png"), RNG.integers(0, 256, size=2000, dtype=np.uint8).tobytes())
    p["half_png"] = write(os.path.join(d, "half.png"), good[:len(good) // 2])
    p["empty_png"] = write(os.path.join(d, "empty.png"), b"")
    p["wav"] = os.path.join(d, "tone.wav")
    write_wav(p["wav"], tone(), 16000)
    p["text_wav"] = write(os.path.join(d, "text.wav"), "this is plain text, not a RIFF/WAVE file\n" * 20)
    p["empty_wav"] = os.path.join(d, "empty.wav")
    write_wav(p["empty_wav"], np.zeros(0), 16000)  # a 44-byte header, 0 frames
    try:  # an AIFF (a container libsndfile reads, but not a WAV); aifc leaves the stdlib in 3.13
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import aifc
        p["aiff"] = os.path.join(d, "clip.aiff")
        with aifc.open(p["aiff"], "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((tone() * 32767).astype(">i2").tobytes())
    except ImportError:
        pass
    return p


def mix_doc(image=None, audio=None, text="a caption"):
    segs = [{"text": text}]
    if image:
        segs.append({"image": image, "pair": 0})
    if audio:
        segs.append({"audio": audio, "pair": 0})
    return {"segments": segs}


def main():
    with tempdir() as tmp:
        m = media(tmp)
        rel = lambda key: os.path.relpath(m[key], tmp)  # noqa: E731  manifest paths are relative to tmp
        n = iter(range(1000))
        out = lambda: os.path.join(tmp, f"out{next(n)}")  # noqa: E731  a fresh output dir per case

        # ------------------------------------------------------------------ mix manifests
        man = jsonl(os.path.join(tmp, "missing.jsonl"), [mix_doc(rel("img0")), mix_doc("media/nope.png")])
        prep_fails("mix: missing image file", "mix", ["--input", man], out(), "missing.jsonl:2", "nope.png")
        man = jsonl(os.path.join(tmp, "missing_wav.jsonl"), [mix_doc(audio="media/nope.wav")])
        prep_fails("mix: missing audio file", "mix", ["--input", man], out(), "missing_wav.jsonl:1", "nope.wav")
        man = jsonl(os.path.join(tmp, "garbage.jsonl"), [mix_doc(rel("img0")), mix_doc(rel("garbage_png"))])
        prep_fails("mix: random bytes named .png", "mix", ["--input", man], out(), "garbage.jsonl:2", "garbage.png")
        man = jsonl(os.path.join(tmp, "half.jsonl"), [mix_doc(rel("half_png"))])
        prep_fails("mix: PNG truncated to half", "mix", ["--input", man], out(), "half.jsonl:1", "half.png")
        man = jsonl(os.path.join(tmp, "textwav.jsonl"), [mix_doc(audio=rel("wav")), mix_doc(audio=rel("text_wav"))])
        prep_fails("mix: text file named .wav", "mix", ["--input", man], out(), "textwav.jsonl:2", "text.wav")
        man = jsonl(os.path.join(tmp, "emptywav.jsonl"), [mix_doc(audio=rel("empty_wav"))])
        prep_fails("mix: WAV with 0 frames", "mix", ["--input", man], out(), "emptywav.jsonl:1", "empty.wav")
        man = write(os.path.join(tmp, "empty.jsonl"), "")
        prep_fails("mix: empty manifest", "mix", ["--input", man], out(), "empty.jsonl")
        man = write(os.path.join(tmp, "blank.jsonl"), "\n  \n\t\n")
        prep_fails("mix: manifest of blank lines", "mix", ["--input", man], out(), "blank.jsonl")
        man = jsonl(os.path.join(tmp, "badjson.jsonl"),
                    [mix_doc(rel("img0")), '{"segments": [{"text": "unterminated}]}', mix_doc(rel("img1"))])
        prep_fails("mix: bad JSON", "mix", ["--input", man], out(), "badjson.jsonl:2")
        man = jsonl(os.path.join(tmp, "badjson3.jsonl"), [mix_doc(), mix_doc(), '[{"text": "a"},]'])
        prep_fails("mix: bad JSON (trailing comma)", "mix", ["--input", man], out(), "badjson3.jsonl:3")
        man = jsonl(os.path.join(tmp, "pair.jsonl"),
                    [{"segments": [{"image": rel("img0"), "pair": 1}, {"image": rel("img1")}]}])
        prep_fails("mix: pair names an image", "mix", ["--input", man], out(), "pair.jsonl:1", "not a text segment")
        man = jsonl(os.path.join(tmp, "pair_range.jsonl"),
                    [{"segments": [{"text": "x"}, {"image": rel("img0"), "pair": 5}]}])
        prep_fails("mix: pair out of range", "mix", ["--input", man], out(), "pair_range.jsonl:1", "pair")
        man = jsonl(os.path.join(tmp, "key.jsonl"), [{"segments": [{"text": "x", "pair": 0}]}])
        prep_fails("mix: pair on a text segment", "mix", ["--input", man], out(), "key.jsonl:1",
                   'unexpected key "pair"')
        man = jsonl(os.path.join(tmp, "key2.jsonl"), [{"segments": [{"text": "x", "lost": False}]}])
        prep_fails("mix: misspelt key", "mix", ["--input", man], out(), "key2.jsonl:1", 'unexpected key "lost"')
        # A directory that already holds shards of the same prefix is refused (they would
        # silently join the new ones); --overwrite replaces them.
        full = out()
        good = jsonl(os.path.join(tmp, "good.jsonl"), [mix_doc(rel("img0"))])
        run(["prep", "mix", "--input", good, "--out", full, "--quiet"])
        expect_error("mix: shards already present", ["prep", "mix", "--input", good, "--out", full, "--quiet"],
                     full, "already holds shards shard-*.h5", "--overwrite")
        p = run(["prep", "mix", "--input", good, "--out", full, "--quiet", "--overwrite"], check=False)
        check(p.returncode == 0 and sorted(os.listdir(full)) == ["shard-00000.h5"], "mix: --overwrite replaces shards")
        man = jsonl(os.path.join(tmp, "split.jsonl"), [mix_doc(), {"segments": [{"text": "x"}], "split": "holdout"}])
        prep_fails("mix: unknown split in the manifest", "mix", ["--input", man], out(), "split.jsonl:2", "holdout")
        man = jsonl(os.path.join(tmp, "ok.jsonl"), [mix_doc(rel("img0"), rel("wav"))])
        prep_fails("mix: unknown --split", "mix", ["--input", man, "--split", "dev"], out(), "dev")
        prep_fails("mix: --channels 2", "mix", ["--input", man, "--channels", "2"], out(), "--channels")
        prep_fails("mix: missing manifest", "mix", ["--input", os.path.join(tmp, "no.jsonl")], out(), "no.jsonl")

        # ------------------------------------------------------------------ images
        tsv = write(os.path.join(tmp, "img_missing.tsv"), f"{rel('img0')}\tok\nmedia/gone.png\ta caption\n")
        prep_fails("images: TSV names a missing file", "images", ["--manifest", tsv], out(), "img_missing.tsv:2",
                   "gone.png")
        tsv = write(os.path.join(tmp, "img_garbage.tsv"), f"{rel('garbage_png')}\tnoise\n")
        prep_fails("images: random bytes named .png", "images", ["--manifest", tsv], out(), "img_garbage.tsv:1",
                   "garbage.png")
        tsv = write(os.path.join(tmp, "img_half.tsv"),
                    f"{rel('img0')}\tok\n{rel('img1')}\tok\n{rel('half_png')}\tcut\n")
        prep_fails("images: PNG truncated to half", "images", ["--manifest", tsv], out(), "img_half.tsv:3", "half.png")
        tsv = write(os.path.join(tmp, "img_empty.tsv"), f"{rel('empty_png')}\tnothing\n")
        prep_fails("images: empty .png", "images", ["--manifest", tsv], out(), "img_empty.tsv:1", "empty.png")
        tsv = write(os.path.join(tmp, "img_none.tsv"), "")
        prep_fails("images: empty TSV", "images", ["--manifest", tsv], out(), "img_none.tsv")
        tsv = write(os.path.join(tmp, "img_notab.tsv"), f"{rel('img0')} no tab here\n")
        prep_fails("images: TSV line without a tab", "images", ["--manifest", tsv], out(), "img_notab.tsv:1")
        tsv = write(os.path.join(tmp, "img_ok.tsv"), f"{rel('img0')}\tok\n")
        prep_fails("images: --channels 2", "images", ["--manifest", tsv, "--channels", "2"], out(), "--channels")
        prep_fails("images: unknown --split", "images", ["--manifest", tsv, "--split", "holdout"], out(), "holdout")

        idx_img = os.path.join(tmp, "idx", "images-idx3-ubyte")
        idx_lab = os.path.join(tmp, "idx", "labels-idx1-ubyte.gz")
        os.makedirs(os.path.dirname(idx_img))
        write_idx(idx_img, RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8))
        write_idx(idx_lab, np.array([0, 1, 2, 1], dtype=np.uint8), compress=True)
        classes = write(os.path.join(tmp, "idx", "classes.txt"), "zero\none\ntwo\n")
        prep_fails("images: IDX 4 labels for 5 images", "images",
                   ["--idx-images", idx_img, "--idx-labels", idx_lab, "--class-names", classes], out(),
                   "labels-idx1-ubyte.gz", "4 labels", "5 images")
        lab5 = os.path.join(tmp, "idx", "labels5-idx1-ubyte")
        write_idx(lab5, np.array([0, 1, 2, 7, 1], dtype=np.uint8))
        prep_fails("images: IDX label without a class name", "images",
                   ["--idx-images", idx_img, "--idx-labels", lab5, "--class-names", classes], out(),
                   "labels5-idx1-ubyte", "label 7", "image 3")
        prep_fails("images: labels file given as images", "images",
                   ["--idx-images", lab5, "--idx-labels", lab5, "--class-names", classes], out(), "labels5-idx1-ubyte")

        # ------------------------------------------------------------------ audio
        tsv = write(os.path.join(tmp, "wav_missing.tsv"), f"{rel('wav')}\tfine\nmedia/absent.wav\tgone\n")
        prep_fails("audio: TSV names a missing file", "audio", ["--manifest", tsv], out(), "wav_missing.tsv:2",
                   "absent.wav")
        tsv = write(os.path.join(tmp, "wav_text.tsv"), f"{rel('text_wav')}\tnot audio\n")
        prep_fails("audio: text file named .wav", "audio", ["--manifest", tsv], out(), "wav_text.tsv:1", "text.wav")
        tsv = write(os.path.join(tmp, "wav_empty.tsv"), f"{rel('wav')}\tfine\n{rel('empty_wav')}\tsilence\n")
        prep_fails("audio: WAV with 0 frames", "audio", ["--manifest", tsv], out(), "wav_empty.tsv:2", "empty.wav")
        if "aiff" in m:
            tsv = write(os.path.join(tmp, "wav_aiff.tsv"), f"{rel('aiff')}\tan aiff\n")
            prep_fails("audio: AIFF file", "audio", ["--manifest", tsv], out(), "wav_aiff.tsv:1", "clip.aiff")
        tsv = write(os.path.join(tmp, "wav_none.tsv"), "\n")
        prep_fails("audio: TSV of a blank line", "audio", ["--manifest", tsv], out(), "wav_none.tsv")
        prep_fails("audio: missing TSV", "audio", ["--manifest", os.path.join(tmp, "nothere.tsv")], out(),
                   "nothere.tsv")

        # ------------------------------------------------------------------ text
        empty_txt = write(os.path.join(tmp, "empty.txt"), "")
        prep_fails("text: empty input file", "text", ["--input", empty_txt], out(), "empty.txt")
        blank_txt = write(os.path.join(tmp, "blank.txt"), "\n\n   \n")
        prep_fails("text: input of blank lines", "text", ["--input", blank_txt], out(), "blank.txt")
        bad_jsonl = write(os.path.join(tmp, "docs.jsonl"), '{"text": "one"}\n{"text": "two"}\n{"text": 3}\n')
        prep_fails("text: JSON lines without a string field", "text", ["--input", bad_jsonl], out(), "docs.jsonl:3")
        bad_jsonl = write(os.path.join(tmp, "broken.jsonl"), '{"text": "one"}\n{"text": "tw\n')
        prep_fails("text: bad JSON line", "text", ["--input", bad_jsonl], out(), "broken.jsonl:2")

        # ------------------------------------------------------------------ failure after completed shards
        # --shard-size 0.0001 MB = 100 bytes: every document (a 784-byte image) starts a new shard.
        lines = [mix_doc(rel("img0")), mix_doc(rel("img1")), mix_doc(rel("half_png")), mix_doc(rel("img2"))]
        man = jsonl(os.path.join(tmp, "late.jsonl"), lines)
        o = out()
        expect_error("mix: bad PNG on line 3 after shards were written",
                     ["prep", "mix", "--input", man, "--out", o, "--shard-size", "0.0001", "--quiet"],
                     "late.jsonl:3", "half.png")
        # shard 0 (line 1) was closed when line 2 arrived; shard 1 (line 2) was still open.
        out_dir_clean("mix: late failure", o, failing=("shard-00001.h5", "shard-00002.h5"),
                      allowed=("shard-00000.h5",))
        done = os.path.join(o, "shard-00000.h5")
        v = run(["data", "verify", done], check=False)
        check(v.returncode == 0 and "1 documents, " in v.stdout and " 1 images" in v.stdout,
              f"mix: late failure: completed shard-00000.h5 verifies: {v.stdout.strip()!r} {v.stderr.strip()!r}")

        tsv = write(os.path.join(tmp, "late.tsv"),
                    f"{rel('wav')}\tone\n{rel('wav')}\ttwo\n{rel('text_wav')}\tthree\n{rel('wav')}\tfour\n")
        o = out()
        expect_error("audio: text-as-WAV on line 3 after shards were written",
                     ["prep", "audio", "--manifest", tsv, "--out", o, "--shard-size", "0.0001", "--quiet",
                      "--threads", "2"], "late.tsv:3", "text.wav")
        out_dir_clean("audio: late failure", o, failing=("shard-00001.h5", "shard-00002.h5"),
                      allowed=("shard-00000.h5",))
        v = run(["data", "verify", o], check=False)
        check(v.returncode == 0 and "1 documents, " in v.stdout and " 1 audio clips" in v.stdout,
              f"audio: late failure: completed shards verify: {v.stdout.strip()!r} {v.stderr.strip()!r}")

        # ------------------------------------------------------------------ data verify
        good_dir = out()
        run(["prep", "mix", "--input", jsonl(os.path.join(tmp, "good.jsonl"), [mix_doc(rel(f"img{i}"), rel("wav"))
                                                                              for i in range(4)]),
             "--out", good_dir, "--quiet"])
        shard = os.path.join(good_dir, "shard-00000.h5")
        data = open(shard, "rb").read()
        truncated = write(os.path.join(tmp, "bad", "truncated.h5"), data[:len(data) // 2])
        expect_error("verify: truncated shard", ["data", "verify", truncated], "truncated.h5")
        not_h5 = write(os.path.join(tmp, "bad", "notes.h5"), "plain text, not HDF5\n" * 50)
        expect_error("verify: not an HDF5 file", ["data", "verify", not_h5], "notes.h5")
        empty = write(os.path.join(tmp, "bad", "empty.h5"), b"")
        expect_error("verify: empty file", ["data", "verify", empty], "empty.h5")
        big_id = os.path.join(tmp, "bad", "big_id.h5")
        shutil.copy(shard, big_id)
        with h5py.File(big_id, "r+") as f:
            f["text/tokens"][5] = 60000
        expect_error("verify: token id >= vocab", ["data", "verify", big_id],
                     "big_id.h5", "/text/tokens", "id 60000 >= vocab_size 50257", "index 5")
        expect_error("verify: missing file", ["data", "verify", os.path.join(tmp, "bad", "nope.h5")], "nope.h5")
        p = run(["data", "verify", good_dir, big_id], check=False)
        check(p.returncode != 0 and "ok " + shard in p.stdout and "big_id.h5" in p.stderr,
              f"verify: good shard then bad one: the good one is reported ok, then the error ({p.returncode})")

        # ------------------------------------------------------------------ determinism
        docs = []
        for i in range(70):  # > one parallel batch (64) at 1 thread
            segs = [{"text": f"Document {i}: " + "word " * (i % 7)}]
            if i % 3 != 2:
                segs.append({"image": rel(f"img{i % 4}"), "pair": 0})
            if i % 2 == 0:
                segs.append({"audio": rel("wav"), "pair": 0})
            segs.append({"text": " the end", "loss": bool(i % 5)})
            docs.append({"segments": segs, "split": ["train", "validation", "test"][i % 3]})
        man = jsonl(os.path.join(tmp, "det.jsonl"), docs)
        runs = []
        for threads in ("1", "2"):
            o = out()
            p = run(["prep", "mix", "--input", man, "--out", o, "--threads", threads, "--shard-size", "0.05",
                     "--quiet"], check=False)
            check(p.returncode == 0,
                  f"determinism: prep mix --threads {threads}: exit {p.returncode} {p.stderr.strip()}")
            runs.append(o)
        a, b = (sorted(os.listdir(r)) for r in runs)
        same = a == b and len(a) > 1 and all(filecmp.cmp(os.path.join(runs[0], f), os.path.join(runs[1], f),
                                                         shallow=False) for f in a)
        check(same, f"determinism: --threads 1 and --threads 2 give byte-identical shards ({len(a)} vs {len(b)} files)")
    finish()


if __name__ == "__main__":
    main()
