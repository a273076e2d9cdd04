"""Learning on real data: a small GPT-2-family model trained for a few hundred steps on
the King James Bible (GPT-2 tokens, whole books held out) must bring the validation loss
well below the unigram baseline: the cross-entropy on the held-out books of the training
set's unigram distribution (add-one smoothed), in nats. Prints both numbers."""
import os
import re

import h5py
import numpy as np

from castor_testing import check, finish, kjv_text, prep, run, tempdir

STEPS = int(os.environ.get("CASTOR_KJV_STEPS", "300"))


def stream(shard_dir):
    """The loader's token stream: each document followed by end-of-text."""
    parts = []
    for name in sorted(os.listdir(shard_dir)):
        with h5py.File(os.path.join(shard_dir, name), "r") as f:
            tokens = f["text/tokens"][()].astype(np.int64)
            offsets = f["text/doc_offsets"][()]
            eot = int(f.attrs["eot_id"])
            for a, b in zip(offsets[:-1], offsets[1:]):
                parts.append(tokens[a:b])
                parts.append(np.array([eot]))
            vocab = int(f.attrs["vocab_size"])
    return np.concatenate(parts), vocab


with tempdir() as tmp:
    train_txt, val_txt = kjv_text(os.path.join(tmp, "text"))
    train = prep(train_txt, os.path.join(tmp, "train"))
    val = prep(val_txt, os.path.join(tmp, "val"))
    train_tokens, vocab = stream(train)
    val_tokens, _ = stream(val)
    counts = np.bincount(train_tokens, minlength=vocab).astype(np.float64) + 1.0
    p = counts / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())
    unigram_val = float(-np.log(p[val_tokens]).mean())

    out = run(["train", "--config", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "kjv-small.ini"),
               "--data.train", train, "--data.val", val, "--train.steps", str(STEPS),
               "--train.eval_every", "0", "--train.threads", "2", "--train.log_every", "10"])
    print(out.stdout)
    val_loss = float(re.findall(r"final val loss (\S+)", out.stdout)[-1].rstrip(","))
    losses = [float(x) for x in re.findall(r"\| loss (\S+)", out.stdout)]
    print(f"unigram entropy of the training stream: {unigram_entropy:.4f} nats")
    print(f"unigram baseline on the held-out books: {unigram_val:.4f} nats")
    print(f"castor validation loss after {STEPS} steps: {val_loss:.4f} nats")
    check(losses[-1] < losses[0] - 3.0, f"training loss falls: step 10 {losses[0]:.3f} -> step {STEPS} "
                                        f"{losses[-1]:.3f}")
    check(val_loss < unigram_val - 1.0, f"val loss {val_loss:.3f} is well below (>1 nat) the unigram baseline "
                                        f"{unigram_val:.3f}")

finish()
