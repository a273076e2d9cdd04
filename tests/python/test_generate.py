"""castor generate: a tiny GPT-2 trained on one repeated sentence (byte tokenizer) must
continue "the quick" greedily with " brown fox jumps over the lazy dog."; sampling is
reproducible for a seed and varies across seeds; top-k 1 and a tiny top-p are greedy; the
context limit stops generation; image and audio prompts run on a multimodal checkpoint;
and every bad input is one "castor: error: rank 0: ..." line with a non-zero exit."""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import castor_bin, check, finish, run, tempdir  # noqa: E402
from media_files import png_bytes, write_wav  # noqa: E402

SENTENCE = "the quick brown fox jumps over the lazy dog. "
TINY = ["--model.d_model", "64", "--model.n_layers", "2", "--model.n_heads", "4", "--model.max_seq_len", "64",
        "--train.seq_len", "64", "--train.threads", "2", "--train.log_every", "50"]


def run_raw(args):
    """Runs castor keeping stdout as bytes (sampled text need not be UTF-8); stderr as text."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    p = subprocess.run([castor_bin()] + args, capture_output=True, env=env, timeout=300)
    p.stderr = p.stderr.decode(errors="replace")
    return p


def run_bytes(args):
    p = run_raw(args)
    if p.returncode != 0:
        sys.exit(f"castor {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.stdout


def stats_line(p):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    return lines[0] if len(lines) == 1 else f"<{len(lines)} stderr lines: {lines!r}>"


def expect_error(name, args, *needles):
    p = run(args, check=False)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    ok = p.returncode != 0 and len(lines) == 1 and lines[0].startswith("castor: error: rank 0: ")
    ok = ok and all(n in lines[0] for n in needles)
    check(ok, f"{name}: exit {p.returncode}, stderr {lines!r}")


def multimodal_shards(tmp):
    """A few 8x8 gray PNGs with captions and 0.12 s tones with transcripts (byte tokens)."""
    media = os.path.join(tmp, "media")
    os.makedirs(media)
    rng = np.random.default_rng(1)
    with open(os.path.join(media, "images.tsv"), "w") as f:
        for i in range(8):
            img = rng.integers(0, 255, (8, 8)).astype(np.uint8)
            with open(os.path.join(media, f"img{i}.png"), "wb") as g:
                g.write(png_bytes(img))
            f.write(f"img{i}.png\tpicture number {i % 2}.\n")
    with open(os.path.join(media, "audio.tsv"), "w") as f:
        for i in range(6):
            t = np.arange(1920) / 16000
            write_wav(os.path.join(media, f"clip{i}.wav"), 0.5 * np.sin(2 * np.pi * (300 + 500 * i) * t), 16000)
            f.write(f"clip{i}.wav\ttone {i}.\n")
    out = os.path.join(tmp, "mm-shards")
    run(["prep", "images", "--manifest", os.path.join(media, "images.tsv"), "--size", "8", "--channels", "1",
         "--tokenizer", "byte", "--out", out, "--prefix", "images", "--quiet"])
    run(["prep", "audio", "--manifest", os.path.join(media, "audio.tsv"), "--n-mels", "16", "--tokenizer", "byte",
         "--out", out, "--prefix", "audio", "--quiet"])
    return media, out


with tempdir() as tmp:
    text = os.path.join(tmp, "fox.txt")
    with open(text, "w") as f:
        f.write(SENTENCE * 300)
    shards = os.path.join(tmp, "fox-shards")
    run(["prep", "text", "--input", text, "--out", shards, "--tokenizer", "byte", "--quiet"])
    # The trained model, and a near-random one (one step) whose samples vary with the seed.
    run(["train", "--data.train", shards, *TINY, "--train.micro_batch", "4", "--train.steps", "150",
         "--optim.lr", "3e-3", "--optim.warmup_steps", "10", "--train.out_dir", os.path.join(tmp, "fox")])
    fox = os.path.join(tmp, "fox", "step_00000150.h5")
    run(["train", "--data.train", shards, *TINY, "--train.micro_batch", "2", "--train.steps", "1",
         "--train.out_dir", os.path.join(tmp, "raw")])
    raw = os.path.join(tmp, "raw", "step_00000001.h5")
    gen = ["generate", "--tokenizer", "byte"]

    # (b) The trained model reproduces the sentence greedily.
    p = run(gen + ["--checkpoint", fox, "--prompt", "the quick", "--temperature", "0", "--max-new-tokens", "35"])
    want = " brown fox jumps over the lazy dog."
    check(p.stdout == want + "\n", f"greedy continuation of 'the quick' is {want!r}: got {p.stdout!r}")
    line = stats_line(p)
    check("prompt 9 positions" in line and "35 new tokens" in line and "tokens/s" in line and
          "stopped: max new tokens" in line, f"one summary line on stderr: {line!r}")
    p = run(gen + ["--checkpoint", fox, "--prompt", "the quick", "--temperature", "0", "--max-new-tokens", "35",
                   "--echo"])
    check(p.stdout == "the quick" + want + "\n", f"--echo prints the prompt first: {p.stdout!r}")
    # Top-k 1 and a tiny nucleus leave one candidate: the greedy text, whatever the seed.
    for extra in (["--top-k", "1"], ["--top-p", "1e-6"]):
        p = run(gen + ["--checkpoint", fox, "--prompt", "the quick", "--max-new-tokens", "35", "--seed", "5", *extra])
        check(p.stdout == want + "\n", f"{' '.join(extra)} is greedy: {p.stdout!r}")
    # At temperature 1 the trained model still follows the sentence (its loss is ~0.05 nats).
    p = run(gen + ["--checkpoint", fox, "--prompt", "the lazy", "--max-new-tokens", "6", "--seed", "3"])
    check(p.stdout.startswith(" dog."), f"sampled continuation of 'the lazy' starts ' dog.': {p.stdout!r}")

    # The context (max_seq_len 64) ends generation: 60 prompt positions leave 4 to decode,
    # so 5 new tokens (the last one sampled from the last position's logits).
    prompt60 = (SENTENCE * 2)[:60]
    p = run(gen + ["--checkpoint", fox, "--prompt", prompt60, "--temperature", "0", "--max-new-tokens", "100"])
    line = stats_line(p)
    check(p.returncode == 0 and "context full" in line and "5 new tokens" in line and len(p.stdout) == 6,
          f"a full context stops generation after 5 tokens: {p.stdout!r} {line!r}")
    p = run(gen + ["--checkpoint", fox, "--prompt", (SENTENCE * 2)[:64], "--temperature", "0"])
    check(p.returncode == 0 and "1 new tokens" in stats_line(p), f"a prompt filling the context gets one token: "
                                                                  f"{stats_line(p)!r}")
    p = run(gen + ["--checkpoint", fox, "--max-new-tokens", "5", "--temperature", "0"])
    check(p.returncode == 0 and "prompt 1 positions" in stats_line(p) and len(p.stdout) <= 6,
          f"an empty prompt starts after end-of-text: {p.stdout!r} {stats_line(p)!r}")

    # (a) Sampling is reproducible for a seed and differs across seeds.
    sample = gen + ["--checkpoint", raw, "--prompt", "the", "--max-new-tokens", "40", "--stop-at-eot", "false"]
    a = run_bytes(sample + ["--seed", "7"])
    b = run_bytes(sample + ["--seed", "7"])
    check(a == b and len(a) == 41, f"seed 7 twice gives the same 40 bytes: {a!r}")
    others = [run_bytes(sample + ["--seed", str(s)]) for s in (1, 2, 3, 4)]
    check(sum(o != a for o in others) >= 3, f"seeds 1-4 give other texts than seed 7: {[o[:12] for o in others]!r}")
    t0 = run_bytes(sample + ["--seed", "1", "--temperature", "0"])
    t1 = run_bytes(sample + ["--seed", "2", "--temperature", "0"])
    check(t0 == t1, "greedy text does not depend on the seed")

    # Images and audio before the text (a multimodal checkpoint trained one step).
    media, mm_shards = multimodal_shards(tmp)
    run(["train", "--data.train", mm_shards, *TINY, "--train.micro_batch", "2", "--train.steps", "1",
         "--model.image_patch", "4", "--model.image_grid", "2", "--model.audio_stack", "4",
         "--loss.contrastive", "1", "--train.out_dir", os.path.join(tmp, "mm")])
    mm = os.path.join(tmp, "mm", "step_00000001.h5")
    png, wav = os.path.join(media, "img0.png"), os.path.join(media, "clip0.wav")
    p = run_raw(gen + ["--checkpoint", mm, "--image", png, "--audio", wav, "--prompt", "pic", "--max-new-tokens", "8",
                       "--temperature", "0"])
    line = stats_line(p)
    # 8x8 image, patch 4: 4 positions; 0.12 s = 13 frames, 4 per position: 4 positions; "pic": 3.
    check(p.returncode == 0 and "prompt 11 positions" in line and "image 8x8 -> 2x2 patches" in line and
          "audio 4 positions" in line, f"image + audio + text prompt: {line!r}")
    big = os.path.join(tmp, "big.png")
    with open(big, "wb") as f:
        f.write(png_bytes(np.random.default_rng(2).integers(0, 255, (12, 10, 3)).astype(np.uint8)))
    p = run_raw(gen + ["--checkpoint", mm, "--image", big, "--max-new-tokens", "3", "--temperature", "0"])
    check(p.returncode == 0 and "image 12x10 resized to 8x8 -> 2x2 patches" in stats_line(p),
          f"an RGB image that does not fit is resized to the largest square of whole patches: {stats_line(p)!r}")
    p = run_raw(gen + ["--checkpoint", mm, "--image", big, "--image-size", "4", "--max-new-tokens", "3",
                       "--temperature", "0"])
    check(p.returncode == 0 and "resized to 4x4 -> 1x1 patches" in stats_line(p),
          f"--image-size 4: one patch: {stats_line(p)!r}")

    # Errors.
    garbage = os.path.join(tmp, "garbage.bin")
    with open(garbage, "w") as f:
        f.write("this is neither an HDF5 file nor a PNG nor a WAV\n" * 20)
    expect_error("missing checkpoint", gen + ["--checkpoint", os.path.join(tmp, "nope.h5")], "nope.h5")
    expect_error("unreadable checkpoint", gen + ["--checkpoint", garbage], "garbage.bin")
    expect_error("no checkpoint", gen + ["--prompt", "x"], "--checkpoint")
    expect_error("vocabulary differs from the tokenizer's", ["generate", "--checkpoint", fox, "--prompt", "x"],
                 "vocabulary (257)", "gpt2", "50257")
    expect_error("prompt longer than the context", gen + ["--checkpoint", fox, "--prompt", "x" * 65],
                 "65 positions", "context of 64")
    expect_error("media + prompt longer than the context",
                 gen + ["--checkpoint", mm, "--image", png, "--prompt", "x" * 61], "65 positions", "4 image")
    expect_error("image for a model without an image adapter", gen + ["--checkpoint", fox, "--image", png],
                 "img0.png", "no image adapter")
    expect_error("audio for a model without an audio adapter", gen + ["--checkpoint", fox, "--audio", wav],
                 "clip0.wav", "no audio adapter")
    expect_error("non-PNG image", gen + ["--checkpoint", mm, "--image", garbage], "garbage.bin", "not a PNG")
    expect_error("missing image", gen + ["--checkpoint", mm, "--image", os.path.join(tmp, "no.png")], "no.png")
    expect_error("unreadable WAV", gen + ["--checkpoint", mm, "--audio", garbage], "garbage.bin")
    expect_error("missing WAV", gen + ["--checkpoint", mm, "--audio", os.path.join(tmp, "no.wav")], "no.wav")
    expect_error("bad --image-size", gen + ["--checkpoint", mm, "--image", png, "--image-size", "6"],
                 "--image-size 6", "multiple")
    expect_error("top-p 0", gen + ["--checkpoint", fox, "--top-p", "0"], "--top-p", "(0, 1]")
    expect_error("top-p above 1", gen + ["--checkpoint", fox, "--top-p", "1.5"], "--top-p", "(0, 1]")
    expect_error("negative temperature", gen + ["--checkpoint", fox, "--temperature=-0.5"], "--temperature")
    expect_error("negative top-k", gen + ["--checkpoint", fox, "--top-k=-1"], "--top-k")
    expect_error("unknown option", gen + ["--checkpoint", fox, "--bogus"], "bogus")
    expect_error("unknown tokenizer", ["generate", "--checkpoint", fox, "--tokenizer", "wordpiece"], "wordpiece")

    p = run(["generate", "--help"])
    check("--max-new-tokens" in p.stdout and "--top-p" in p.stdout, "generate --help lists the options")
    p = run(["--help"])
    check("generate" in p.stdout and "eval" in p.stdout, "castor --help lists generate and eval")

finish()
