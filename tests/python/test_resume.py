"""Resume is bit-exact: a run interrupted with --train.exit_after and continued with
--train.resume prints the same step losses and ends with the same weights, bit for bit,
as an uninterrupted run (both families, gradient accumulation on)."""
import os
import re

import h5py
import numpy as np

from castor_testing import check, finish, kjv_text, prep, run, tempdir

STEP = re.compile(r"^step\s+(\d+)/\d+ \| loss (\S+) \| lr (\S+) \| grad norm (\S+)")


def step_lines(stdout):
    return {int(m.group(1)): m.group(0) for m in map(STEP.match, stdout.splitlines()) if m}


with tempdir() as tmp:
    _, val_txt = kjv_text(os.path.join(tmp, "text"))
    shards = prep(val_txt, os.path.join(tmp, "shards"), tokenizer="gpt2")
    for family, extra in (("gpt2", []), ("llama", ["--model.n_kv_heads", "2"])):
        common = ["train", "--data.train", shards, "--data.val", shards, "--model.family", family,
                  "--model.d_model", "64", "--model.n_layers", "2", "--model.n_heads", "4",
                  "--model.max_seq_len", "64", "--train.seq_len", "64", "--train.micro_batch", "2",
                  "--train.grad_accum", "2", "--train.steps", "10", "--train.log_every", "1",
                  "--train.eval_every", "5", "--train.eval_batches", "2", "--optim.warmup_steps", "3",
                  "--train.threads", "1", *extra]
        full = run(common + ["--train.out_dir", os.path.join(tmp, family, "full")])
        first = run(common + ["--train.out_dir", os.path.join(tmp, family, "split"),
                              "--train.exit_after", "4"])
        second = run(common + ["--train.out_dir", os.path.join(tmp, family, "split"), "--train.resume"])
        a = step_lines(full.stdout)
        b = {**step_lines(first.stdout), **step_lines(second.stdout)}
        check("exiting after 4 steps" in first.stdout, f"{family}: first half stops at step 4")
        check("resumed from" in second.stdout and "step_00000004.h5" in second.stdout,
              f"{family}: second half resumes from step 4")
        check(sorted(a) == list(range(1, 11)) and sorted(b) == list(range(1, 11)),
              f"{family}: both runs log steps 1..10")
        same = all(a[k] == b[k] for k in a)
        check(same, f"{family}: every logged step (loss, lr, grad norm) is identical")
        if not same:
            for k in sorted(a):
                if a[k] != b.get(k):
                    print("  full :", a[k], "\n  split:", b.get(k))
        val_line = re.compile(r"^step\s+\d+ \| val loss (\S+)$", re.M)
        val_a = val_line.findall(full.stdout)
        val_b = val_line.findall(first.stdout + second.stdout)
        check(val_a == val_b and len(val_a) == 2, f"{family}: validation losses identical {val_a} vs {val_b}")
        fa = h5py.File(os.path.join(tmp, family, "full", "step_00000010.h5"), "r")
        fb = h5py.File(os.path.join(tmp, family, "split", "step_00000010.h5"), "r")
        names = []
        fa["model"].visit(lambda n: names.append(n) if isinstance(fa["model"][n], h5py.Dataset) else None)
        diff = [n for n in names if not np.array_equal(fa["model"][n][()], fb["model"][n][()])]
        diff += [n for n in names if not np.array_equal(fa["optim/exp_avg_sq"][n][()], fb["optim/exp_avg_sq"][n][()])]
        check(len(names) > 0 and not diff, f"{family}: final weights and moments bitwise equal ({len(names)} tensors; "
                                           f"differing: {diff[:3]})")
        loss1 = float(STEP.match(a[1]).group(2))
        loss10 = float(STEP.match(a[10]).group(2))
        check(loss10 < loss1, f"{family}: loss decreases {loss1} -> {loss10}")

finish()
