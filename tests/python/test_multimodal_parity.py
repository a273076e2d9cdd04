#!/usr/bin/python3
# PyTorch parity of castor's multimodal mixture-of-experts model (docs/model.md): for each
# case, runs `castor_parity_dump --multimodal CASE --out FILE` (castor, fp32), which writes
# the model's config and loss weights (/meta), its weights (/model), a multimodal batch
# (/batch), castor's loss terms (/losses) and the gradient of the micro-batch objective
# (/grad), plus a teacher (/teacher, teacher.model.*) when distillation is on; rebuilds the
# model independently in PyTorch (multimodal_reference.py, float64) and checks
#   - the parameter names and shapes (docs/model.md "Parameter names"),
#   - every loss term castor logged, and the total, within 1e-4 relative error, and that the
#     reference has no term (with a nonzero weight) that castor did not log,
#   - EVERY parameter gradient within 1e-4 relative L2 error,
#   - that assignments were really dropped in the capacity cases.
# Exits non-zero listing every failure. When a term mismatches, the other readings of the
# spec's open points (multimodal_reference.Options) are tried and named if they match.
#
#   test_multimodal_parity.py                     all cases (tool: $CASTOR_PARITY_DUMP or build*/tests)
#   test_multimodal_parity.py --case NAME ...     some cases
#   test_multimodal_parity.py --dump FILE ...     check existing dump files, no tool
#   test_multimodal_parity.py --keep DIR          keep the dumps the tool wrote
import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multimodal_reference as mm  # noqa: E402
from castor_testing import test_tool  # noqa: E402
from test_parity import attr, rel_err  # noqa: E402  (shared with the dense parity test)

TOL = 1e-4
DTYPE = torch.float64
CASES = ("gpt2-top1-capacity", "llama-top2-dropless", "llama-top2-capacity-shared", "gpt2-top2-distill")
DROP_CASES = {"gpt2-top1-capacity", "llama-top2-capacity-shared"}
TEACHER_CASES = {"gpt2-top2-distill"}
MODEL_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len", "norm_eps",
              "rope_theta", "moe_experts", "moe_top_k", "moe_every", "moe_d_ff", "moe_capacity",
              "moe_shared_expert", "image_patch", "image_channels", "image_grid", "audio_stack", "n_mels")
BATCH_KEYS = ("ids", "targets", "modality", "align", "segment_begin", "masked", "patches", "patch_pos",
              "patch_grid", "frames", "frame_pos", "pairs")
WORST_SHOWN = 12
MARGIN_WARN = 1e-5


def read_config(meta, prefix):
    v = {k: attr(meta, prefix + k) for k in MODEL_KEYS}
    return mm.Config(family=str(attr(meta, prefix + "family")), **{
        k: (float(x) if k in ("norm_eps", "rope_theta", "moe_capacity")
            else bool(int(x)) if k == "moe_shared_expert" else int(x)) for k, x in v.items()})


def read_loss_config(meta):
    keys = mm.TERMS + ("temperature", "distill_temperature")
    return mm.LossConfig(**{k: float(attr(meta, "loss." + k)) for k in keys})


def load_dump(path):
    with h5py.File(path, "r") as f:
        meta = f["meta"]
        d = dict(cfg=read_config(meta, "model."), loss_cfg=read_loss_config(meta))
        d["model"] = {n: np.array(ds, dtype=np.float32) for n, ds in f["model"].items()}
        d["grad"] = {n: np.array(ds, dtype=np.float32) for n, ds in f["grad"].items()}
        d["batch"] = {k: np.array(f["batch/" + k]) for k in BATCH_KEYS}
        d["losses"] = {n: float(np.array(ds, dtype=np.float64).reshape(-1)[0]) for n, ds in f["losses"].items()}
        d["teacher_cfg"], d["teacher"] = None, None
        if "teacher" in f:
            d["teacher_cfg"] = read_config(meta, "teacher.model.")
            d["teacher"] = {n: np.array(ds, dtype=np.float32) for n, ds in f["teacher"].items()}
    return d


def check_names(label, what, have, shapes):
    if set(have) != set(shapes):
        return [f"{label}: {what} parameter names differ: only in castor {sorted(set(have) - set(shapes))}, "
                f"only in the reference {sorted(set(shapes) - set(have))}"]
    return [f"{label}: {what} {n}: castor shape {have[n].shape}, reference {tuple(shapes[n])}"
            for n in sorted(shapes) if tuple(have[n].shape) != tuple(shapes[n])]


def term_err(castor, ref):
    return abs(castor - ref) / abs(ref) if ref != 0.0 else abs(castor)


def run_reference(d, opts=None, grad=True):
    params = {n: torch.tensor(d["model"][n], dtype=DTYPE).requires_grad_(grad) for n in d["model"]}
    teacher = None
    if d["teacher"] is not None:
        teacher = (d["teacher_cfg"], {n: torch.tensor(w, dtype=DTYPE) for n, w in d["teacher"].items()})
    if grad:
        out = mm.forward(d["cfg"], d["loss_cfg"], params, d["batch"], teacher=teacher, opts=opts)
        out["total"].backward()
    else:
        with torch.no_grad():
            out = mm.forward(d["cfg"], d["loss_cfg"], params, d["batch"], teacher=teacher, opts=opts)
    return out, params


def probe_options(d, bad_terms):
    """For mismatching terms, the single flips of Options under which they match castor."""
    hints = []
    base = mm.Options()
    for field in dataclasses.fields(mm.Options):
        value = getattr(base, field.name)
        alt = (not value) if isinstance(value, bool) else ("value" if value == "item" else "item")
        try:
            out, _ = run_reference(d, dataclasses.replace(base, **{field.name: alt}), grad=False)
        except Exception as e:  # noqa: BLE001 - a probe must not hide the real report
            hints.append(f"probe {field.name}={alt!r} raised {e!r}")
            continue
        fixed = [t for t in bad_terms if t in out and term_err(d["losses"][t], float(out[t])) <= TOL]
        if fixed:
            hints.append(f"castor matches {', '.join(fixed)} under Options({field.name}={alt!r})")
    return hints


def check_dump(path, label, expect_drops=None, expect_teacher=None):
    """Returns a list of failure messages (empty = parity). expect_*: None = infer from the file."""
    failures = []
    try:
        d = load_dump(path)
    except (KeyError, OSError, ValueError, AssertionError) as e:
        return [f"{label}: cannot read {path}: {e!r}"]
    cfg, loss_cfg = d["cfg"], d["loss_cfg"]
    B, T = d["batch"]["ids"].shape
    print(f"\n=== {label}: {cfg.describe()}")
    weights = ", ".join(f"{t}={loss_cfg.weight(t):g}" for t in mm.TERMS)
    print(f"    loss weights {weights}; temperature {loss_cfg.temperature:g}, "
          f"distill T {loss_cfg.distill_temperature:g}")
    nb = d["batch"]
    print(f"    batch {B}x{T}: {len(nb['patches'])} patches, {len(nb['frames'])} frame groups, "
          f"{len(nb['pairs'])} pairs, {int(np.rint(nb['masked']).sum())} masked positions"
          + (f"; teacher {d['teacher_cfg'].describe()}" if d["teacher_cfg"] else ""))

    # Names and shapes.
    failures += check_names(label, "model", d["model"], mm.param_shapes(cfg))
    failures += check_names(label, "grad", d["grad"], mm.param_shapes(cfg))
    if d["teacher"] is not None:
        failures += check_names(label, "teacher", d["teacher"], mm.param_shapes(d["teacher_cfg"]))
    if expect_teacher is None:
        expect_teacher = loss_cfg.distill != 0.0
    if expect_teacher and d["teacher"] is None:
        failures.append(f"{label}: distillation case without /teacher")
    if failures:
        return failures

    try:
        out, params = run_reference(d)
    except ValueError as e:
        return [f"{label}: the reference rejects the dump: {e}"]

    # Loss terms.
    castor = d["losses"]
    print(f"    {'term':<16} {'weight':>8} {'castor':>13} {'reference':>13} {'rel err':>9}")
    bad_terms = []
    for term in mm.TERMS + ("total",):
        in_c, in_r = term in castor, term in out
        if not in_c and not in_r:
            continue
        w = "" if term == "total" else f"{loss_cfg.weight(term):g}"
        if in_c and in_r:
            r = float(out[term])
            e = term_err(castor[term], r)
            flag = "" if e <= TOL else "  FAIL"
            print(f"    {term:<16} {w:>8} {castor[term]:13.7f} {r:13.7f} {e:9.2e}{flag}")
            if not e <= TOL:
                failures.append(f"{label}: term {term}: rel err {e:.3e} > {TOL:g} "
                                f"(castor {castor[term]:.7f}, reference {r:.7f})")
                bad_terms.append(term)
        elif in_c:
            print(f"    {term:<16} {w:>8} {castor[term]:13.7f} {'-':>13} {'':>9}  FAIL")
            failures.append(f"{label}: castor logged {term} = {castor[term]:.7f}; the reference has no items for it")
        elif loss_cfg.weight(term) == 0.0:
            print(f"    {term:<16} {w:>8} {'-':>13} {float(out[term]):13.7f}   (weight 0, not logged by castor)")
        else:
            print(f"    {term:<16} {w:>8} {'-':>13} {float(out[term]):13.7f} {'':>9}  FAIL")
            failures.append(f"{label}: the reference has {term} = {float(out[term]):.7f} "
                            f"(weight {loss_cfg.weight(term):g}) but castor did not log it")
    for term in sorted(set(castor) - set(mm.TERMS) - {"total"}):
        failures.append(f"{label}: castor logged an unknown term {term!r}")

    # Gradients.
    errs = []
    for name in mm.param_shapes(cfg):
        g_ref = params[name].grad
        g_ref = np.zeros(d["model"][name].shape) if g_ref is None else g_ref.numpy()
        errs.append((rel_err(d["grad"][name], g_ref), name, float(np.linalg.norm(g_ref))))
    errs.sort(key=lambda x: -x[0])
    n_bad = sum(1 for e, _, _ in errs if not e <= TOL)
    print(f"    gradients: {len(errs)} parameters, {n_bad} above {TOL:g}; worst {min(WORST_SHOWN, len(errs))}:")
    print(f"    {'parameter':<60} {'|g_ref|':>10} {'rel err':>9}")
    for i, (e, name, norm) in enumerate(errs):
        if i < WORST_SHOWN or not e <= TOL:
            print(f"    {name:<60} {norm:10.3e} {e:9.2e}{'' if e <= TOL else '  FAIL'}")
        if not e <= TOL:
            failures.append(f"{label}: gradient of {name}: rel err {e:.3e} > {TOL:g}")

    # Routing.
    near_tie = False
    for st in out["moe"]:
        kept = st["kept"]
        total_kept = sum(kept)
        shares = [k / total_kept for k in kept] if total_kept else [0.0] * len(kept)
        cap = "dropless" if st["capacity"] is None else f"capacity {st['capacity']}"
        print(f"    MoE layer {st['layer']}: {cap}, assigned {st['assigned']}, kept {kept} "
              f"(share {min(shares):.3f}..{max(shares):.3f}), dropped {st['dropped']}, "
              f"top-k margin {st['margin']:.2e}")
        near_tie |= st["margin"] < MARGIN_WARN
    if near_tie:
        print(f"    warning: a top-k margin below {MARGIN_WARN:g}: float32 routing may pick other experts")
    if expect_drops is None:
        expect_drops = cfg.moe_capacity > 0
    if expect_drops and sum(out["dropped"]) == 0:
        failures.append(f"{label}: a capacity case in which no assignment was dropped "
                        f"(dropped per MoE layer {out['dropped']})")
    if expect_drops and cfg.moe_capacity <= 0:
        failures.append(f"{label}: expected a capacity case, the file has moe_capacity = {cfg.moe_capacity:g}")

    if bad_terms:
        for h in probe_options(d, bad_terms):
            print("    hint: " + h)
            failures.append(f"{label}: hint: {h}")
    print(f"    {label}: {'OK' if not failures else f'{len(failures)} failures'} "
          f"(worst gradient {errs[0][1]} {errs[0][0]:.2e})")
    return failures


def run_tool(tool, case, out):
    cmd = [tool, "--multimodal", case, "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(out):
        tail = (p.stdout + p.stderr)[-2000:]
        return f"{case}: {' '.join(cmd)} failed (exit {p.returncode}):\n{tail}"
    return None


def main():
    ap = argparse.ArgumentParser(description="castor multimodal MoE parity against multimodal_reference.py")
    ap.add_argument("--dump", action="append", default=[], help="check this existing dump (no tool); repeatable")
    ap.add_argument("--case", action="append", default=[], choices=CASES, help="run only this case; repeatable")
    ap.add_argument("--keep", help="write the tool's dumps to this directory and keep them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    failures = []
    if args.dump:
        for path in args.dump:
            failures += check_dump(path, os.path.basename(path))
    else:
        tool = test_tool("CASTOR_PARITY_DUMP", "castor_parity_dump")
        print(f"castor_parity_dump: {tool}")
        with tempfile.TemporaryDirectory(prefix="castor_mm_parity_") as tmp:
            where = args.keep or tmp
            os.makedirs(where, exist_ok=True)
            for case in args.case or CASES:
                path = os.path.join(where, case + ".h5")
                err = run_tool(tool, case, path)
                if err:
                    failures.append(err)
                    continue
                failures += check_dump(path, case, expect_drops=case in DROP_CASES,
                                       expect_teacher=case in TEACHER_CASES)
    print()
    if failures:
        print(f"test_multimodal_parity: FAILED ({len(failures)}):")
        for m in failures:
            print("  " + m)
        return 1
    print(f"test_multimodal_parity: OK (every term and every gradient within {TOL:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
