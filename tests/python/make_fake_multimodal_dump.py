#!/usr/bin/python3
# Writes a fake castor multimodal parity dump: an HDF5 file in exactly the layout of
# `castor_parity_dump --multimodal CASE` (see test_multimodal_parity.py), with random
# weights and a random but valid batch, whose /losses and /grad come from
# multimodal_reference.py itself. It exists to smoke-test test_multimodal_parity.py's whole
# reading / comparing path without castor:
#     make_fake_multimodal_dump.py --config gpt2-top1-capacity --out fake.h5
#     test_multimodal_parity.py --dump fake.h5
# Configs: gpt2-top1-capacity (top-1, capacity 1.0 with drops, two MoE layers, d_ff and
# moe_d_ff left at 0 = default) and llama-top2-dropless-shared-distill (top-2 dropless with a
# shared expert, one MoE layer of three, and a gpt2 teacher that has only an image adapter).
# The batch: B = 2 rows of T = 24; a paired 2x2-patch image (P = 2) and an unpaired one, a
# paired 3-position audio clip, a prompt document (align = 1), padding, and masked image and
# audio positions.
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multimodal_reference as mm  # noqa: E402

EOT = 0
CONFIGS = ("gpt2-top1-capacity", "llama-top2-dropless-shared-distill")
MODEL_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "max_seq_len", "norm_eps",
              "rope_theta", "moe_experts", "moe_top_k", "moe_every", "moe_d_ff", "moe_capacity",
              "moe_shared_expert", "image_patch", "image_channels", "image_grid", "audio_stack", "n_mels")
FLOAT_KEYS = {"norm_eps", "rope_theta", "moe_capacity"}


def make_configs(name):
    media = dict(image_patch=2, image_channels=3, image_grid=2, audio_stack=2, n_mels=5)
    if name == "gpt2-top1-capacity":
        cfg = mm.Config("gpt2", 61, 32, 2, 4, 4, 0, 24, 1e-5, 10000.0, moe_experts=4, moe_top_k=1, moe_every=1,
                        moe_d_ff=0, moe_capacity=1.0, moe_shared_expert=False, **media)
        loss = mm.LossConfig(lm=1.0, align=0.5, contrastive=0.3, reconstruction=2.0, balance=0.01,
                             router_z=0.001, distill=0.0, temperature=0.1, distill_temperature=1.0)
        return cfg, loss, None
    if name == "llama-top2-dropless-shared-distill":
        cfg = mm.Config("llama", 61, 32, 3, 4, 2, 0, 24, 1e-5, 10000.0, moe_experts=4, moe_top_k=2, moe_every=2,
                        moe_d_ff=24, moe_capacity=0.0, moe_shared_expert=True, **media)
        loss = mm.LossConfig(lm=1.0, align=0.7, contrastive=0.2, reconstruction=1.5, balance=0.02,
                             router_z=0.002, distill=0.5, temperature=0.07, distill_temperature=2.0)
        teacher = mm.Config("gpt2", 61, 16, 1, 2, 2, 40, 32, 1e-5, 10000.0, image_patch=2, image_channels=3,
                            image_grid=2)
        return cfg, loss, teacher
    raise SystemExit(f"unknown config {name!r} (one of {', '.join(CONFIGS)})")


def make_batch(cfg, rng):
    B, T, V = 2, 24, cfg.vocab_size
    ids = rng.integers(1, V, size=(B, T))
    targets = rng.integers(0, V, size=(B, T))
    modality = np.zeros((B, T), np.int64)
    align = np.zeros((B, T), np.int64)
    segment_begin = np.zeros((B, T), np.int64)
    masked = np.zeros((B, T), np.int64)

    def segment(b, begin, end, kind):
        modality[b, begin:end] = kind
        segment_begin[b, begin:end] = begin
        if kind != mm.TEXT:
            ids[b, begin:end] = EOT
            targets[b, begin:end] = -1

    # Row 0: text | image 2x2 (3..6) | its caption (7..10) | eot | another document's text.
    segment(0, 0, 3, mm.TEXT)
    segment(0, 3, 7, mm.IMAGE)
    segment(0, 7, 11, mm.TEXT)
    segment(0, 11, 12, mm.TEXT)
    ids[0, 11] = EOT
    segment(0, 12, 24, mm.TEXT)
    segment_begin[0, 12:] = 0  # started in an earlier window
    # Row 1: prompt (0..2, no targets) + answer (3..6), align = 1 | eot | audio 3 positions
    # (8..10) | its transcript (11..14) | eot | an unpaired image 2x2 (16..19) | padding.
    segment(1, 0, 3, mm.TEXT)
    targets[1, 0:3] = -1
    segment(1, 3, 7, mm.TEXT)
    align[1, 0:8] = 1
    segment(1, 7, 8, mm.TEXT)
    ids[1, 7] = EOT
    segment(1, 8, 11, mm.AUDIO)
    segment(1, 11, 15, mm.TEXT)
    segment(1, 15, 16, mm.TEXT)
    ids[1, 15] = EOT
    segment(1, 16, 20, mm.IMAGE)
    segment(1, 20, 24, mm.PAD)
    ids[1, 20:] = EOT
    segment_begin[1, 20:] = 0
    masked[0, 4] = masked[1, 9] = masked[1, 17] = masked[1, 18] = 1

    patch_pos, patch_grid = [], []
    for b, begin in ((0, 3), (1, 16)):
        for i in range(4):
            patch_pos.append(b * T + begin + i)
            patch_grid.append((i // 2, i % 2))
    patches = rng.random((len(patch_pos), cfg.patch_dim))
    frame_pos = [1 * T + t for t in (8, 9, 10)]
    frames = rng.normal(size=(3, cfg.frame_dim))
    frames[2, cfg.n_mels:] = 0.0  # the clip ends inside the last stacked group
    pairs = [(0, mm.IMAGE, 3, 7, 7, 11), (1, mm.AUDIO, 8, 11, 11, 15)]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return dict(ids=f32(ids), targets=f32(targets), modality=f32(modality), align=f32(align),
                segment_begin=f32(segment_begin), masked=f32(masked), patches=f32(patches),
                patch_pos=f32(patch_pos), patch_grid=f32(patch_grid), frames=f32(frames), frame_pos=f32(frame_pos),
                pairs=f32(pairs))


def write_config(meta, prefix, cfg, raw_cfg):
    """raw_cfg holds the values as given (d_ff = 0 stays 0, as a dump may write it)."""
    meta.attrs[prefix + "family"] = np.bytes_(cfg.family)
    for k in MODEL_KEYS:
        v = getattr(raw_cfg, k)
        if k == "moe_shared_expert":
            v = int(v)
        meta.attrs[prefix + k] = np.float64(v) if k in FLOAT_KEYS else np.int64(v)


class Raw:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def raw_of(name, cfg):
    """The config as the dump writes it: gpt2-top1-capacity keeps d_ff = moe_d_ff = 0."""
    r = Raw(**{k: getattr(cfg, k) for k in MODEL_KEYS})
    if name == "gpt2-top1-capacity":
        r.d_ff = 0
        r.moe_d_ff = 0
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True, choices=CONFIGS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, loss_cfg, t_cfg = make_configs(args.config)
    rng = np.random.default_rng(args.seed)
    batch = make_batch(cfg, rng)
    teacher = None
    if t_cfg is not None:
        t_params = {n: t.float().double() for n, t in mm.random_params(t_cfg, seed=args.seed + 1000, std=0.2).items()}
        teacher = (t_cfg, t_params)
    for attempt in range(50):
        # float32-representable weights, so the file holds exactly what the reference used.
        params = {n: t.float().double().requires_grad_(True)
                  for n, t in mm.random_params(cfg, seed=args.seed + attempt, std=0.15, router_std=0.6).items()}
        out = mm.forward(cfg, loss_cfg, params, batch, teacher=teacher)
        if cfg.moe_capacity == 0 or sum(out["dropped"]) > 0:
            break
    else:
        raise SystemExit("no seed gave drops")
    out["total"].backward()

    with h5py.File(args.out, "w") as f:
        meta = f.create_group("meta")
        write_config(meta, "model.", cfg, raw_of(args.config, cfg))
        for term in mm.TERMS:
            meta.attrs["loss." + term] = np.float64(loss_cfg.weight(term))
        meta.attrs["loss.temperature"] = np.float64(loss_cfg.temperature)
        meta.attrs["loss.distill_temperature"] = np.float64(loss_cfg.distill_temperature)
        if teacher is not None:
            write_config(meta, "teacher.model.", t_cfg, raw_of("teacher", t_cfg))
            for n, t in teacher[1].items():
                f.create_dataset("teacher/" + n, data=t.numpy().astype(np.float32))
        for n, t in params.items():
            f.create_dataset("model/" + n, data=t.detach().numpy().astype(np.float32))
            g = t.grad if t.grad is not None else torch.zeros_like(t)  # e.g. an expert nobody chose
            f.create_dataset("grad/" + n, data=g.numpy().astype(np.float32))
        for k, v in batch.items():
            f.create_dataset("batch/" + k, data=v)
        for term in mm.TERMS + ("total",):
            if term in out:
                f.create_dataset("losses/" + term, data=np.array([float(out[term])], dtype=np.float32))
    terms = ", ".join(f"{t}={float(out[t]):.5f}" for t in mm.TERMS + ("total",) if t in out)
    print(f"{args.out}: {cfg.describe()}; {terms}; dropped per MoE layer {out['dropped']}")


if __name__ == "__main__":
    main()
