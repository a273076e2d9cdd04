"""The multimodal MoE model under data parallelism: dp = 2 (ZeRO 0 and 1) must train like
dp = 1 with accumulation 2 on the same global batch, for a model with image adapters,
MoE layers with capacity dropping, and the LM, contrastive, reconstruction, balance and
z-loss terms: every logged term per step, the grad norm and the final weights agree to
within floating-point reassociation. Reconstruction masks are drawn per (sample,
position), so they are the same in both layouts."""
import json
import os

import h5py
import numpy as np

from castor_testing import check, finish, prep, run, tempdir

TERMS = ("lm", "contrastive", "reconstruction", "balance", "router_z")


def train(ranks, extra, out, data):
    args = ["train", "--data.train", data, "--model.family", "llama", "--model.d_model", "32",
            "--model.n_layers", "2", "--model.n_heads", "2", "--model.max_seq_len", "64", "--model.moe_experts", "4",
            "--model.moe_top_k", "2", "--model.moe_capacity", "1.0", "--model.image_patch", "7",
            "--model.image_grid", "4", "--loss.contrastive", "0.5", "--loss.reconstruction", "0.5",
            "--loss.mask_ratio", "0.3", "--loss.balance", "0.05", "--loss.router_z", "0.01",
            "--train.seq_len", "64", "--train.steps", "6", "--train.micro_batch", "2", "--train.log_every", "1",
            "--train.out_dir", out, "--optim.warmup_steps", "1", "--optim.lr", "3e-3"] + extra
    p = run(args, check=False, timeout=600, ranks=ranks if ranks > 1 else None)
    check(p.returncode == 0, f"train ranks={ranks} {' '.join(extra)}: exit {p.returncode} {p.stderr.strip()[-400:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"loss"' in line]
    with h5py.File(os.path.join(out, "step_00000006.h5"), "r") as f:
        w = {}
        f["model"].visititems(lambda n, o: w.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return rows, w, p.stdout


def compare(name, a, b, tol):
    (ra, wa, _), (rb, wb, _) = a, b
    check(len(ra) == len(rb) == 6, f"{name}: 6 logged steps each ({len(ra)}, {len(rb)})")
    worst = 0.0
    for x, y in zip(ra, rb):
        pairs = [(x["loss"], y["loss"]), (x["grad_norm"], y["grad_norm"])]
        pairs += [(x["terms"][t], y["terms"][t]) for t in TERMS]
        worst = max([worst] + [abs(u - v) / max(abs(v), 1e-12) for u, v in pairs])
    check(worst < tol, f"{name}: loss, grad norm and every term per step agree, worst rel diff {worst:.2e} < {tol:g}")
    wworst = max(np.linalg.norm(wa[k] - wb[k]) / max(np.linalg.norm(wb[k]), 1e-12) for k in wb)
    check(set(wa) == set(wb) and wworst < tol, f"{name}: final weights agree, worst rel diff {wworst:.2e}")


with tempdir() as tmp:
    text = os.path.join(tmp, "t.txt")
    with open(text, "w") as f:
        for i in range(200):
            f.write(f"Verse {i}: and the evening and the morning were the day number {i * 7 % 101}.\n\n")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    prep(text, os.path.join(tmp, "text"), tokenizer="byte")
    os.symlink(os.path.join(tmp, "text", "shard-00000.h5"), os.path.join(data, "a-text.h5"))
    fm = "/usr/share/datasets/fashion-mnist/t10k-"
    classes = os.path.join(os.environ["CASTOR_SOURCE_DIR"], "data", "fashion-mnist", "classes.txt")
    run(["prep", "images", "--idx-images", fm + "images-idx3-ubyte.gz", "--idx-labels", fm + "labels-idx1-ubyte.gz",
         "--class-names", classes, "--limit", "300", "--tokenizer", "byte", "--out", os.path.join(tmp, "img"),
         "--quiet"])
    os.symlink(os.path.join(tmp, "img", "shard-00000.h5"), os.path.join(data, "b-img.h5"))

    single = train(1, ["--train.grad_accum", "2"], os.path.join(tmp, "single"), data)
    rows = single[0]
    check(all(t in rows[0]["terms"] for t in TERMS), f"every term is logged: {sorted(rows[0]['terms'])}")
    check(all(len(r["terms"]["expert_min_share"]) == 2 for r in rows), "expert shares logged for both MoE layers")
    check("dropped" in single[2], "capacity 1.0 drops assignments (the log reports the dropped share)")
    compare("dp=2 zero=0 vs dp=1 accum 2", train(2, [], os.path.join(tmp, "dp2"), data), single, 1e-4)
    compare("dp=2 zero=1 vs dp=1 accum 2", train(2, ["--parallel.zero", "1"], os.path.join(tmp, "dp2z1"), data),
            single, 1e-4)

finish()
