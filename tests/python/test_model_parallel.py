"""Tensor, sequence and expert parallelism reproduce the single-process run. For the dense
model (GPT-2: fused q|k|v with biases, tied head; Llama: grouped-query heads, SwiGLU) and
the multimodal MoE model (image adapter, contrastive and reconstruction heads, MoE with
capacity dropping or dropless, shared expert), every layout of up to 4 ranks and two of 8
train 10 steps; each is compared with one process accumulating the same dp micro-batches:
every logged loss term and the grad norm per step, and the final weights of the whole
model (layout-free checkpoints), must agree to a relative error of 1e-5.
Checkpoints are layout-free: 5 steps at tp2 x dp4 (ep2, edp2; ZeRO 1) resume at tp1 x dp8
(ep4) and on one rank, the same global batch each step, and continue as the uninterrupted
single-process run does.
Run with case names as arguments to run only those ("resume": the checkpoint case)."""
import json
import os
import sys

import h5py
import numpy as np

from castor_testing import check, finish, prep, run, tempdir

TOL = 1e-5
STEPS = 10

DENSE = {
    "gpt2": ["--model.family", "gpt2", "--model.n_heads", "4"],
    "llama": ["--model.family", "llama", "--model.n_heads", "4", "--model.n_kv_heads", "2"],
}
MOE = ["--model.family", "llama", "--model.n_heads", "4", "--model.moe_experts", "4", "--model.moe_top_k", "2",
       "--model.moe_shared_expert", "true", "--model.image_patch", "7", "--model.image_grid", "4",
       "--loss.contrastive", "0.5", "--loss.reconstruction", "0.5", "--loss.mask_ratio", "0.3",
       "--loss.balance", "0.05", "--loss.router_z", "0.01"]
CAPACITY = ["--model.moe_capacity", "1.0"]
DROPLESS = ["--model.moe_capacity", "0"]
SP = ["--parallel.sequence_parallel", "true"]


def layout(tp=1, dp=1, ep=1, zero=0, extra=()):
    return tp * dp, dp, ["--parallel.tp", str(tp), "--parallel.dp", str(dp), "--parallel.ep", str(ep),
                         "--parallel.zero", str(zero)] + list(extra)


# name: (model, moe mode, (ranks, dp, options))
CASES = {
    # dense, every tp/dp layout up to 4 ranks, SP on and off
    "gpt2 dp2": ("gpt2", [], layout(dp=2)),
    "llama dp4 zero2": ("llama", [], layout(dp=4, zero=2)),
    "gpt2 tp2": ("gpt2", [], layout(tp=2)),
    "gpt2 tp2 sp": ("gpt2", [], layout(tp=2, extra=SP)),
    "gpt2 tp4 sp": ("gpt2", [], layout(tp=4, extra=SP)),
    "gpt2 tp2 dp2 zero1": ("gpt2", [], layout(tp=2, dp=2, zero=1)),
    "llama tp2 sp": ("llama", [], layout(tp=2, extra=SP)),
    "llama tp2 dp2 sp zero2": ("llama", [], layout(tp=2, dp=2, zero=2, extra=SP)),
    "llama tp2": ("llama", [], layout(tp=2)),
    # multimodal MoE, every tp/dp/ep layout up to 4 ranks, both MoE modes, SP on and off
    "moe dp2 dropless": ("moe", DROPLESS, layout(dp=2)),
    "moe dp4 capacity zero1": ("moe", CAPACITY, layout(dp=4, zero=1)),
    "moe tp2 capacity": ("moe", CAPACITY, layout(tp=2)),
    "moe tp2 sp dropless": ("moe", DROPLESS, layout(tp=2, extra=SP)),
    "moe dp2 ep2 capacity": ("moe", CAPACITY, layout(dp=2, ep=2)),
    "moe dp2 ep2 dropless zero1": ("moe", DROPLESS, layout(dp=2, ep=2, zero=1)),
    "moe tp4 sp capacity": ("moe", CAPACITY, layout(tp=4, extra=SP)),
    "moe tp2 dp2 dropless": ("moe", DROPLESS, layout(tp=2, dp=2)),
    "moe tp2 dp2 ep2 sp capacity zero1": ("moe", CAPACITY, layout(tp=2, dp=2, ep=2, zero=1, extra=SP)),
    "moe dp4 ep2 dropless zero2": ("moe", DROPLESS, layout(dp=4, ep=2, zero=2)),
    "moe dp4 ep4 capacity": ("moe", CAPACITY, layout(dp=4, ep=4)),
    # 8 ranks
    "gpt2 tp2 dp4 sp zero1": ("gpt2", [], layout(tp=2, dp=4, zero=1, extra=SP)),
    "moe tp2 dp4 ep2 sp capacity": ("moe", CAPACITY, layout(tp=2, dp=4, ep=2, extra=SP)),
}


def train(model, moe_mode, ranks, accum, options, out, data, finished=True):
    args = ["train", "--data.train", data, "--model.d_model", "32", "--model.n_layers", "2",
            "--model.max_seq_len", "32", "--model.vocab_size", "384", "--train.seq_len", "32",
            "--train.steps", str(STEPS), "--train.micro_batch", "2", "--train.grad_accum", str(accum),
            "--train.log_every", "1", "--train.out_dir", out, "--optim.warmup_steps", "1", "--optim.lr", "3e-3"]
    args += (MOE if model == "moe" else DENSE[model]) + moe_mode + options
    p = run(args, check=False, timeout=600, ranks=ranks if ranks > 1 else None)
    check(p.returncode == 0, f"train {model} ranks={ranks} {' '.join(options)}: exit {p.returncode} "
          f"{p.stderr.strip()[-400:]}")
    if ranks > 1:
        opt = dict(zip(options[::2], options[1::2]))
        want = (f"layout: tp={opt['--parallel.tp']} dp={opt['--parallel.dp']} pp=1 ep={opt['--parallel.ep']} on "
                f"{ranks} ranks" + (" (sequence parallel)" if "--parallel.sequence_parallel" in opt else ""))
        check(want in p.stdout, f"the log names the layout: {want}")
    if moe_mode == CAPACITY:
        check("dropped)" in p.stdout, "capacity 1.0 drops assignments (the log reports the dropped share)")
    if not finished:
        return p.stdout
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"loss"' in line]
    with h5py.File(os.path.join(out, f"step_{STEPS:08d}.h5"), "r") as f:
        w = {}
        f["model"].visititems(lambda n, o: w.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return rows, w


def values(row):
    out = {"loss": row["loss"], "grad_norm": row["grad_norm"]}
    for k, v in row.get("terms", {}).items():
        if isinstance(v, (int, float)):
            out[k] = v
    return out


def compare(name, got, ref):
    (rg, wg), (rr, wr) = got, ref
    check(len(rg) == len(rr) == STEPS, f"{name}: {STEPS} logged steps each ({len(rg)}, {len(rr)})")
    worst, what = 0.0, ""
    same_terms = all(set(values(a)) == set(values(b)) for a, b in zip(rg, rr))
    check(same_terms, f"{name}: every step logs the same terms in both runs")
    for step, (a, b) in enumerate(zip(rg, rr), 1):
        va, vb = values(a), values(b)
        for k in set(va) & set(vb):
            e = abs(va[k] - vb[k]) / max(abs(vb[k]), 1e-12)
            if e > worst:
                worst, what = e, f"{k} at step {step}"
    check(worst <= TOL, f"{name}: every loss term and the grad norm per step agree, worst rel err {worst:.1e} "
          f"({what}) <= {TOL:g}")
    check(set(wg) == set(wr), f"{name}: the checkpoint holds the same tensors ({len(wg)} vs {len(wr)})")
    diff = np.sqrt(sum(float(np.sum((wg[k].astype(np.float64) - wr[k]) ** 2)) for k in wr))
    norm = np.sqrt(sum(float(np.sum(wr[k].astype(np.float64) ** 2)) for k in wr))
    check(diff / norm <= TOL, f"{name}: final weights agree, rel err {diff / norm:.1e} <= {TOL:g}")


selected = sys.argv[1:] or list(CASES)
with tempdir() as tmp:
    text = os.path.join(tmp, "t.txt")
    with open(text, "w") as f:
        for i in range(300):
            f.write(f"Verse {i}: and the evening and the morning were the day number {i * 7 % 101}.\n\n")
    prep(text, os.path.join(tmp, "text"), tokenizer="byte")
    text_data = os.path.join(tmp, "text", "shard-00000.h5")
    mm_data = os.path.join(tmp, "mm")
    os.makedirs(mm_data)
    os.symlink(text_data, os.path.join(mm_data, "a-text.h5"))
    fm = "/usr/share/datasets/fashion-mnist/t10k-"
    classes = os.path.join(os.environ["CASTOR_SOURCE_DIR"], "data", "fashion-mnist", "classes.txt")
    run(["prep", "images", "--idx-images", fm + "images-idx3-ubyte.gz", "--idx-labels", fm + "labels-idx1-ubyte.gz",
         "--class-names", classes, "--limit", "300", "--tokenizer", "byte", "--out", os.path.join(tmp, "img"),
         "--quiet"])
    os.symlink(os.path.join(tmp, "img", "shard-00000.h5"), os.path.join(mm_data, "b-img.h5"))

    references = {}
    for name in (n for n in selected if n in CASES):
        model, moe_mode, (ranks, dp, options) = CASES[name]
        data = mm_data if model == "moe" else text_data
        key = (model, tuple(moe_mode), dp)
        if key not in references:
            references[key] = train(model, moe_mode, 1, dp, [], os.path.join(tmp, f"ref-{len(references)}"), data)
        slug = name.replace(" ", "-")
        compare(name, train(model, moe_mode, ranks, 1, options, os.path.join(tmp, slug), data), references[key])

    if "resume" in selected or not sys.argv[1:]:
        # Global batch 8 micro-batches: dp4 x accum 2 = dp8 x accum 1 = dp1 x accum 8.
        ref = train("moe", CAPACITY, 1, 8, [], os.path.join(tmp, "resume-ref"), mm_data)
        ranks, _, opts = layout(tp=2, dp=4, ep=2, zero=1, extra=SP)
        for target, (t_ranks, t_accum, t_opts) in {"tp1 x dp8 (ep4)": (8, 1, layout(dp=8, ep=4)[2]),
                                                   "one rank": (1, 8, [])}.items():
            out = os.path.join(tmp, "resume-" + target.split()[0])
            # the first 5 steps under tp2 x dp4 (ep2), then the rest under the target layout
            log = train("moe", CAPACITY, ranks, 2, opts + ["--train.exit_after", "5"], out, mm_data, finished=False)
            check("exiting after 5 steps" in log, f"{target}: the first run stops after 5 steps")
            resumed = train("moe", CAPACITY, t_ranks, t_accum, t_opts + ["--train.resume"], out, mm_data)
            compare(f"saved at tp2 x dp4 (ep2), resumed at {target}", resumed, ref)

finish()
