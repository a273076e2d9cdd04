"""castor eval: on a tiny multimodal corpus (8x8 images of 4 shapes with their captions,
short tones with 3 transcripts; byte tokens) a checkpoint trained for 150 steps must beat
one trained for 1 step on perplexity, contrastive loss and retrieval; every reported number
is finite, chance is 1 / distinct captions, the JSON parses and agrees with the table. On
text, eval's cross-entropy equals an independent PyTorch forward of the checkpoint over
the same windows, and it counts every text target. Bad inputs are one "castor: error: rank 0: ..." line."""
import json
import math
import os
import re
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import check, finish, run, tempdir  # noqa: E402
from media_files import png_bytes, write_wav  # noqa: E402
import torch_reference  # noqa: E402

SHAPES = ["a bright square.", "a dark square.", "a vertical bar.", "a horizontal bar."]
TONES = [("a low tone.", 300), ("a high tone.", 2000), ("a middle tone.", 800)]
TINY = ["--model.d_model", "64", "--model.n_layers", "2", "--model.n_heads", "4", "--model.max_seq_len", "64",
        "--train.seq_len", "64", "--train.threads", "2", "--train.log_every", "50"]
MM = ["--model.image_patch", "4", "--model.image_grid", "2", "--model.audio_stack", "4", "--loss.contrastive", "1",
      "--loss.reconstruction", "1"]


def expect_error(name, args, *needles):
    p = run(args, check=False)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = p.returncode != 0 and len(lines) == 1 and lines[0].startswith("castor: error: rank 0: ")
    ok = ok and all(n in lines[0] for n in needles)
    check(ok, f"{name}: exit {p.returncode}, stderr {lines!r}")


def multimodal_shards(tmp):
    media = os.path.join(tmp, "media")
    os.makedirs(media)
    rng = np.random.default_rng(0)

    def image(k):
        a = rng.integers(0, 40, (8, 8)).astype(np.int64)
        if k == 0:
            a[2:6, 2:6] += 200
        elif k == 1:
            a += 150
            a[2:6, 2:6] -= 140
        elif k == 2:
            a[:, 3:5] += 200
        else:
            a[3:5, :] += 200
        return np.clip(a, 0, 255).astype(np.uint8)

    with open(os.path.join(media, "images.tsv"), "w") as f:
        for i in range(48):
            with open(os.path.join(media, f"img{i}.png"), "wb") as g:
                g.write(png_bytes(image(i % 4)))
            f.write(f"img{i}.png\t{SHAPES[i % 4]}\n")
    with open(os.path.join(media, "audio.tsv"), "w") as f:
        for i in range(24):
            text, hz = TONES[i % 3]
            t = np.arange(1920) / 16000
            write_wav(os.path.join(media, f"clip{i}.wav"),
                      0.5 * np.sin(2 * np.pi * hz * (1 + 0.05 * rng.standard_normal()) * t), 16000)
            f.write(f"clip{i}.wav\t{text}\n")
    out = os.path.join(tmp, "mm-shards")
    run(["prep", "images", "--manifest", os.path.join(media, "images.tsv"), "--size", "8", "--channels", "1",
         "--tokenizer", "byte", "--out", out, "--prefix", "images", "--quiet"])
    run(["prep", "audio", "--manifest", os.path.join(media, "audio.tsv"), "--n-mels", "16", "--tokenizer", "byte",
         "--out", out, "--prefix", "audio", "--quiet"])
    return out


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


with tempdir() as tmp:
    shards = multimodal_shards(tmp)
    run(["train", "--data.train", shards, *TINY, *MM, "--train.micro_batch", "4", "--train.steps", "150",
         "--optim.lr", "3e-3", "--optim.warmup_steps", "10", "--train.out_dir", os.path.join(tmp, "trained")])
    run(["train", "--data.train", shards, *TINY, *MM, "--train.micro_batch", "4", "--train.steps", "1",
         "--train.out_dir", os.path.join(tmp, "untrained")])
    ckpts = {"trained": os.path.join(tmp, "trained", "step_00000150.h5"),
             "untrained": os.path.join(tmp, "untrained", "step_00000001.h5")}
    res = {}
    for name, ckpt in ckpts.items():
        p = run(["eval", "--checkpoint", ckpt, "--data", shards, "--json"], check=False)
        try:
            res[name] = r = json.loads(p.stdout)
        except ValueError:
            check(False, f"{name}: eval --json prints one JSON object: exit {p.returncode} {p.stdout!r} {p.stderr!r}")
            finish()
        check(p.stdout.count("\n") == 1, f"{name}: the JSON is one line")
        nums = [r["perplexity"], r["mean_nll"], *r["losses"].values()]
        nums += [v for k in r["retrieval"].values() for v in k.values()]
        check(all(finite(x) for x in nums), f"{name}: every number is finite: {r}")
        check(abs(r["perplexity"] - math.exp(r["mean_nll"])) <= 1e-6 * r["perplexity"],
              f"{name}: perplexity {r['perplexity']} = exp(mean nll {r['mean_nll']})")
        check(set(r["losses"]) == {"lm", "contrastive", "reconstruction"},
              f"{name}: loss terms lm, contrastive, reconstruction: {sorted(r['losses'])}")
        check(r["windows"] == r["windows_total"] > 0 and r["batches"] == -(-r["windows"] // 4) and r["seq_len"] == 64,
              f"{name}: every window once ({r['windows']} windows, {r['batches']} micro-batches of 4)")
        check(r["text_targets"] > 0, f"{name}: {r['text_targets']} text targets")
        for kind, distinct, total in (("image", 4, 48), ("audio", 3, 24)):
            x = r["retrieval"].get(kind)
            if x is None:
                check(False, f"{name}: {kind} retrieval reported")
                continue
            check(x["distinct"] == distinct and abs(x["chance"] - 1 / distinct) < 1e-9,
                  f"{name}: {kind}: {x['distinct']} distinct texts (want {distinct}), chance {x['chance']}")
            check(0 < x["items"] <= total and x["correct"] <= x["items"] and
                  abs(x["top1"] - x["correct"] / x["items"]) < 1e-9,
                  f"{name}: {kind}: top-1 {x['top1']} = {x['correct']} / {x['items']} (at most {total} pairs)")
    t, u = res["trained"], res["untrained"]
    check(t["perplexity"] < 0.5 * u["perplexity"],
          f"training lowers perplexity: {u['perplexity']:.3f} -> {t['perplexity']:.3f}")
    check(t["losses"]["contrastive"] < u["losses"]["contrastive"],
          f"training lowers the contrastive loss: {u['losses']['contrastive']:.4f} -> {t['losses']['contrastive']:.4f}")
    check(t["losses"]["reconstruction"] < u["losses"]["reconstruction"],
          f"training lowers the reconstruction loss: {u['losses']['reconstruction']:.4f} -> "
          f"{t['losses']['reconstruction']:.4f}")
    for kind in ("image", "audio"):
        a, b = t["retrieval"][kind], u["retrieval"][kind]
        check(a["top1"] >= 0.8 and a["top1"] > a["chance"] + 0.3,
              f"{kind} retrieval after training: top-1 {a['top1']:.3f} (untrained {b['top1']:.3f}, chance "
              f"{a['chance']:.3f})")

    # The table says the same.
    p = run(["eval", "--checkpoint", ckpts["trained"], "--data", shards])
    print(p.stdout)
    m = re.search(r"^perplexity\s+(\S+)", p.stdout, re.M)
    check(m is not None and abs(float(m.group(1)) - t["perplexity"]) < 1e-3,
          f"table perplexity {m.group(1) if m else None} = JSON {t['perplexity']:.4f}")
    check(re.search(r"^retrieval\s+image -> caption: top-1 [\d.]+ \(\d+ of \d+ images, 4 distinct captions, "
                    r"chance 0\.2500\)$", p.stdout, re.M) is not None, "table: image retrieval line")
    check(re.search(r"^retrieval\s+audio -> transcript: .*3 distinct transcripts, chance 0\.3333\)$", p.stdout,
                    re.M) is not None, "table: audio retrieval line")
    check(all(re.search(rf"^loss\s+{k}\s", p.stdout, re.M) for k in ("lm", "contrastive", "reconstruction")),
          "table: one line per loss term")
    p = run(["eval", "--checkpoint", ckpts["trained"], "--data", shards, "--json", "--batches", "2", "--seq-len", "32",
             "--batch", "4"])
    r = json.loads(p.stdout)
    check(r["batches"] == 2 and r["windows"] == 8 and r["seq_len"] == 32 and r["windows_total"] > 8,
          f"--batches 2 --seq-len 32: {r['batches']} batches, {r['windows']} of {r['windows_total']} windows")

    # Text: eval's numbers against an independent PyTorch forward (torch_reference.py) of the
    # checkpoint over the same windows (the position stream in order, cut every 64).
    text = os.path.join(tmp, "fox.txt")
    with open(text, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog. " * 60)  # 2700 bytes: 42 windows of 64
    fox = os.path.join(tmp, "fox-shards")
    run(["prep", "text", "--input", text, "--out", fox, "--tokenizer", "byte", "--quiet"])
    run(["train", "--data.train", fox, *TINY, "--train.micro_batch", "4", "--train.steps", "20", "--optim.lr", "3e-3",
         "--optim.warmup_steps", "5", "--train.out_dir", os.path.join(tmp, "fox-run")])
    fox_ckpt = os.path.join(tmp, "fox-run", "step_00000020.h5")
    r = json.loads(run(["eval", "--checkpoint", fox_ckpt, "--data", fox, "--json"]).stdout)
    check(r["windows"] == r["windows_total"] == 42 and r["batches"] == 11 and r["text_targets"] == 42 * 64 and
          r["retrieval"] == {} and set(r["losses"]) == {"lm"},
          f"text only: all 42 windows once (last micro-batch short), 42 x 64 targets, lm only: {r}")
    with h5py.File(os.path.join(fox, "shard-00000.h5"), "r") as f:
        stream = np.concatenate([f["text/tokens"][()].astype(np.int64), [int(f.attrs["eot_id"])]])
    with h5py.File(fox_ckpt, "r") as f:
        P = {}
        f["model"].visit(lambda n: P.__setitem__(n, torch.tensor(f["model"][n][()], dtype=torch.float64))
                         if isinstance(f["model"][n], h5py.Dataset) else None)
    cfg = torch_reference.Config("gpt2", 257, 64, 2, 4, 4, 256, 64, 1e-5, 10000.0)
    ids = torch.tensor(np.stack([stream[w * 64:(w + 1) * 64] for w in range(42)]))
    tgt = torch.tensor(np.stack([stream[w * 64 + 1:(w + 1) * 64 + 1] for w in range(42)]))
    z = torch_reference.logits(cfg, P, ids)
    per_window = torch.nn.functional.cross_entropy(z.reshape(-1, 257), tgt.reshape(-1), reduction="none")
    per_window = per_window.reshape(42, 64).mean(1).numpy()
    want_nll = float(per_window.mean())
    want_lm = float(np.mean([per_window[i:i + 4].mean() for i in range(0, 42, 4)]))  # mean of micro-batch means
    check(abs(r["mean_nll"] - want_nll) < 1e-5 * want_nll and abs(r["losses"]["lm"] - want_lm) < 1e-5 * want_lm,
          f"eval mean nll {r['mean_nll']:.6f} / lm {r['losses']['lm']:.6f} = PyTorch {want_nll:.6f} / {want_lm:.6f}")
    r = json.loads(run(["eval", "--checkpoint", fox_ckpt, "--data", fox, "--json", "--batches", "3"]).stdout)
    want = float(per_window[:12].mean())
    check(r["windows"] == 12 and abs(r["mean_nll"] - want) < 1e-5 * want,
          f"--batches 3: the first 12 windows, mean nll {r['mean_nll']:.6f} = PyTorch {want:.6f}")

    # --tokenizer-check: a model with a larger vocabulary than the data's.
    p = run(["train", "--data.train", fox, *TINY, "--model.vocab_size", "300", "--train.micro_batch", "2",
             "--train.steps", "1", "--train.out_dir", os.path.join(tmp, "v300")])
    v300 = os.path.join(tmp, "v300", "step_00000001.h5")
    p = run(["eval", "--checkpoint", v300, "--data", fox, "--json"], check=False)
    check(p.returncode == 0, f"a model vocabulary larger than the data's is accepted by default: {p.stderr.strip()}")
    expect_error("--tokenizer-check with another vocabulary",
                 ["eval", "--checkpoint", v300, "--data", fox, "--tokenizer-check"], "257", "300", "differs")
    p = run(["eval", "--checkpoint", fox_ckpt, "--data", fox, "--tokenizer-check"], check=False)
    check(p.returncode == 0, f"--tokenizer-check passes on the same vocabulary: {p.stderr.strip()}")

    # Errors.
    gpt2 = os.path.join(tmp, "gpt2-shards")
    run(["prep", "text", "--input", text, "--out", gpt2, "--tokenizer", "gpt2", "--quiet"])
    garbage = os.path.join(tmp, "garbage.h5")
    with open(garbage, "w") as f:
        f.write("this is not an HDF5 file\n" * 40)
    ev = ["eval", "--checkpoint", fox_ckpt, "--data", fox]
    expect_error("missing checkpoint", ["eval", "--checkpoint", os.path.join(tmp, "nope.h5"), "--data", fox],
                 "nope.h5")
    expect_error("unreadable checkpoint", ["eval", "--checkpoint", garbage, "--data", fox], "garbage.h5")
    expect_error("missing data", ["eval", "--checkpoint", fox_ckpt, "--data", os.path.join(tmp, "none.h5")],
                 "none.h5")
    expect_error("unreadable data", ["eval", "--checkpoint", fox_ckpt, "--data", garbage], "garbage.h5")
    expect_error("data vocabulary exceeds the model's", ["eval", "--checkpoint", fox_ckpt, "--data", gpt2],
                 "50257", "257", "exceeds")
    expect_error("media for a text-only model", ["eval", "--checkpoint", fox_ckpt, "--data", shards], "takes no")
    expect_error("--seq-len beyond the context", ev + ["--seq-len", "65"], "--seq-len 65", "64")
    expect_error("--batch 0", ev + ["--batch", "0"], "--batch")
    expect_error("no --data", ["eval", "--checkpoint", fox_ckpt], "--data")
    expect_error("no --checkpoint", ["eval", "--data", fox], "--checkpoint")
    p = run(["eval", "--help"])
    check("--tokenizer-check" in p.stdout and "--json" in p.stdout, "eval --help lists the options")

finish()
