#!/usr/bin/python3
# PyTorch parity of castor's model, loss, gradients and optimizer, for both families.
# For each of gpt2 and llama: runs tests/tools/parity_dump (castor, fp32), which writes the
# initial weights, a batch, the first-step gradients and the losses of 5 AdamW steps to an
# HDF5 file; rebuilds the same model independently in PyTorch (torch_reference.py, float64),
# loads those weights, and checks
#   - the loss and EVERY parameter gradient (relative L2 error <= 1e-4),
#   - the 5 losses of AdamW training with castor's clipping and LR schedule (each <= 1e-4).
# Exits non-zero, naming the parameter / step and its error, on any mismatch.
#
# The tool is found through $CASTOR_PARITY_DUMP (set by ctest), else under the repository's
# build*/tests/ folders.
import math
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402
from castor_testing import test_tool  # noqa: E402

TOL = 1e-4
STEPS = 5
DTYPE = torch.float64


def find_tool():
    return test_tool("CASTOR_PARITY_DUMP", "castor_parity_dump")


def attr(group, name):
    if name not in group.attrs:
        raise KeyError(f"missing attribute {group.name}@{name}")
    v = group.attrs[name]
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == (1,):
        v = v[0]
    if isinstance(v, np.generic):
        v = v.item()
    return v.decode() if isinstance(v, bytes) else v


def rel_err(a, b):
    """||a - b|| / ||b|| in float64 (b the reference); 0 when both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    d = np.linalg.norm(a - b)
    if nb == 0.0:
        return 0.0 if d == 0.0 else math.inf
    return float(d / nb)


def run_tool(tool, family, out):
    cmd = [tool, "--family", family, "--out", out, "--steps", str(STEPS)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(out):
        sys.exit(f"test_parity: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")


def check_family(tool, family, tmp):
    """Returns a list of failure messages (empty = parity)."""
    failures = []
    path = os.path.join(tmp, family + ".h5")
    run_tool(tool, family, path)
    with h5py.File(path, "r") as f:
        meta = f["meta"]
        got_family = attr(meta, "model.family")
        if got_family != family:
            return [f"{family}: file says model.family = {got_family!r}"]
        cfg = ref.Config(family=family,
                         vocab_size=int(attr(meta, "model.vocab_size")),
                         d_model=int(attr(meta, "model.d_model")),
                         n_layers=int(attr(meta, "model.n_layers")),
                         n_heads=int(attr(meta, "model.n_heads")),
                         n_kv_heads=int(attr(meta, "model.n_kv_heads")),
                         d_ff=int(attr(meta, "model.d_ff")),
                         max_seq_len=int(attr(meta, "model.max_seq_len")),
                         norm_eps=float(attr(meta, "model.norm_eps")),
                         rope_theta=float(attr(meta, "model.rope_theta")))
        opt = {k: float(attr(meta, "optim." + k))
               for k in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip")}
        warmup = int(attr(meta, "optim.warmup_steps"))
        steps = int(attr(meta, "train.steps"))
        model = {name: np.array(ds, dtype=np.float32) for name, ds in f["model"].items()}
        grads = {name: np.array(ds, dtype=np.float32) for name, ds in f["grad"].items()}
        decay_attrs = {name: int(attr(meta["decay"], name)) for name in meta["decay"].attrs}
        ids_f = np.array(f["batch/ids"], dtype=np.float64)
        targets_f = np.array(f["batch/targets"], dtype=np.float64)
        losses = np.array(f["losses"], dtype=np.float64)

    print(f"\n=== {family}: V={cfg.vocab_size} C={cfg.d_model} L={cfg.n_layers} H={cfg.n_heads} "
          f"KVH={cfg.n_kv_heads} F={cfg.d_ff} eps={cfg.norm_eps:g} theta={cfg.rope_theta:g}; "
          f"batch {ids_f.shape}")

    # Every file parameter is used and every torch parameter is loaded, with the same shape.
    shapes = ref.param_shapes(cfg)
    if set(model) != set(shapes):
        return [f"{family}: parameter names differ: only in castor {sorted(set(model) - set(shapes))}, "
                f"only in torch {sorted(set(shapes) - set(model))}"]
    for name in sorted(shapes):
        if tuple(model[name].shape) != tuple(shapes[name]):
            failures.append(f"{family}: {name}: castor shape {model[name].shape}, torch {shapes[name]}")
    if set(grads) != set(model):
        failures.append(f"{family}: /grad names differ from /model names: "
                        f"{sorted(set(grads) ^ set(model))}")
    if set(decay_attrs) != set(model):
        failures.append(f"{family}: /meta/decay names differ from /model names: "
                        f"{sorted(set(decay_attrs) ^ set(model))}")
    if failures:
        return failures
    if steps != STEPS or losses.shape != (STEPS,):
        return [f"{family}: expected {STEPS} losses, file has train.steps={steps}, losses {losses.shape}"]

    ids = torch.from_numpy(np.rint(ids_f).astype(np.int64))
    targets = torch.from_numpy(np.rint(targets_f).astype(np.int64))
    assert np.all(np.rint(ids_f) == ids_f) and np.all(np.rint(targets_f) == targets_f)

    def fresh_params():
        return {n: torch.tensor(model[n], dtype=DTYPE).requires_grad_(True) for n in shapes}

    # 1. Loss and gradients at the initial weights.
    P = fresh_params()
    L = ref.loss(cfg, P, ids, targets)
    L.backward()
    loss_err = abs(losses[0] - float(L)) / abs(float(L))
    print(f"loss: castor {losses[0]:.7f}  torch {float(L):.7f}  rel err {loss_err:.2e}")
    if not loss_err <= TOL:
        failures.append(f"{family}: loss rel err {loss_err:.3e} > {TOL:g} "
                        f"(castor {losses[0]:.7f}, torch {float(L):.7f})")

    print(f"{'parameter':<44} {'|g_torch|':>10} {'rel err':>10}")
    worst_name, worst = None, -1.0
    for name in shapes:
        g_ref = P[name].grad.numpy()
        e = rel_err(grads[name], g_ref)
        flag = "" if e <= TOL else "  FAIL"
        print(f"{name:<44} {np.linalg.norm(g_ref):10.3e} {e:10.2e}{flag}")
        if not e <= TOL:
            failures.append(f"{family}: gradient of {name}: rel err {e:.3e} > {TOL:g}")
        if e > worst:
            worst_name, worst = name, e
    print(f"worst gradient: {worst_name} rel err {worst:.2e}")

    # 2. Five AdamW steps on the same batch with castor's clipping and schedule.
    P = fresh_params()
    decay_names = {n for n, d in decay_attrs.items() if d == 1}
    t_losses = ref.train(cfg, P, ids, targets, steps=STEPS, lr=opt["lr"], min_lr=opt["min_lr"],
                         warmup=warmup, weight_decay=opt["weight_decay"],
                         betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"], clip=opt["grad_clip"],
                         decay_names=decay_names)
    print(f"{'step':<6} {'lr':>10} {'castor':>12} {'torch':>12} {'rel err':>10}")
    worst_step = 0.0
    for s in range(STEPS):
        e = abs(losses[s] - t_losses[s]) / abs(t_losses[s])
        worst_step = max(worst_step, e)
        flag = "" if e <= TOL else "  FAIL"
        lr = ref.learning_rate(opt["lr"], opt["min_lr"], warmup, s, STEPS)
        print(f"{s:<6} {lr:10.3e} {losses[s]:12.7f} {t_losses[s]:12.7f} {e:10.2e}{flag}")
        if not e <= TOL:
            failures.append(f"{family}: training loss at step {s}: rel err {e:.3e} > {TOL:g} "
                            f"(castor {losses[s]:.7f}, torch {t_losses[s]:.7f})")
    if t_losses[-1] >= t_losses[0]:
        failures.append(f"{family}: training did not lower the loss ({t_losses[0]:.4f} -> {t_losses[-1]:.4f})")
    print(f"{family}: worst gradient rel err {worst:.2e} ({worst_name}), worst training-loss rel err "
          f"{worst_step:.2e}")
    return failures


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tool = find_tool()
    print(f"castor_parity_dump: {tool}")
    failures = []
    with tempfile.TemporaryDirectory(prefix="castor_parity_") as tmp:
        for family in ("gpt2", "llama"):
            failures += check_family(tool, family, tmp)
    print()
    if failures:
        print(f"test_parity: FAILED ({len(failures)} mismatches):")
        for m in failures:
            print("  " + m)
        return 1
    print(f"test_parity: OK (loss, every gradient and {STEPS} AdamW losses within {TOL:g} for gpt2 and llama)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
