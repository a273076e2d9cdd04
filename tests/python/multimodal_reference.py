# Independent PyTorch reference of castor's unified multimodal mixture-of-experts model,
# written from docs/model.md (the contract), not from castor's code, for
# test_multimodal_parity.py. It reuses the dense building blocks of torch_reference.py
# (LayerNorm, RMSNorm, GELU tanh approximation, SiLU, RoPE in the rotate_half convention,
# Hugging Face parameter names) and adds:
#   - per-modality embeddings (text / image patches / stacked audio frames / padding), the
#     learned mask embedding at masked media positions, the image row/column embeddings and
#     the 4-row modality table;
#   - causal attention over keys [key_begin, t] (media -> segment_begin, caption text of a
#     listed pair -> the caption's first position, anything else -> 0);
#   - mixture-of-experts feed-forward layers: softmax router, top-k with ties to the lower
#     index, renormalised gates for k >= 2 (raw probability for k = 1), per-expert capacity
#     ceil(c N k / E) filled choice by choice in token order, optional ungated shared expert,
#     Switch balance loss and router z-loss (means over the MoE layers);
#   - the loss terms lm, align, contrastive (symmetric InfoNCE), reconstruction, balance,
#     router_z and distill (T^2 KL against a teacher run with the same code, no gradients).
# Everything is written for clarity (explicit per-token loops in the MoE); run it in float64.
#
# Choices docs/model.md leaves open are collected in `Options` (the defaults are this
# reference's reading of the spec) so that a mismatch can be probed against the other reading.
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import torch_reference as tr

TEXT, IMAGE, AUDIO, PAD = 0, 1, 2, 3
# Every loss term, in the order of the spec's table.
TERMS = ("lm", "align", "contrastive", "reconstruction", "balance", "router_z", "distill")


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

def default_d_ff(family, d_model):
    """castor's default hidden size: 4C (gpt2), a multiple of 64 near 8C/3 (llama)."""
    if family == "gpt2":
        return 4 * d_model
    return (8 * d_model // 3 + 63) // 64 * 64


class Config(tr.Config):
    """The dense fields of torch_reference.Config plus the MoE and media-adapter fields.
    d_ff = 0, moe_d_ff = 0 and n_kv_heads = 0 mean castor's defaults (resolved here)."""

    def __init__(self, family, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, max_seq_len,
                 norm_eps, rope_theta, moe_experts=0, moe_top_k=1, moe_every=1, moe_d_ff=0,
                 moe_capacity=0.0, moe_shared_expert=False, image_patch=0, image_channels=0,
                 image_grid=0, audio_stack=0, n_mels=0):
        n_kv_heads = int(n_kv_heads) or int(n_heads)
        d_ff = int(d_ff) or default_d_ff(family, int(d_model))
        super().__init__(family, int(vocab_size), int(d_model), int(n_layers), int(n_heads), n_kv_heads,
                         d_ff, int(max_seq_len), float(norm_eps), float(rope_theta))
        self.moe_experts = int(moe_experts)
        self.moe_top_k = int(moe_top_k)
        self.moe_every = int(moe_every)
        self.moe_d_ff = int(moe_d_ff) or d_ff
        self.moe_capacity = float(moe_capacity)
        self.moe_shared_expert = bool(moe_shared_expert)
        self.image_patch = int(image_patch)
        self.image_channels = int(image_channels)
        self.image_grid = int(image_grid)
        self.audio_stack = int(audio_stack)
        self.n_mels = int(n_mels)
        if self.moe_experts > 0:
            assert 1 <= self.moe_top_k <= self.moe_experts, (self.moe_top_k, self.moe_experts)
            assert self.moe_every >= 1, self.moe_every
        if self.image_patch > 0:
            assert self.image_channels > 0 and self.image_grid > 0

    @property
    def prefix(self):
        return "transformer." if self.family == "gpt2" else "model."

    @property
    def has_image(self):
        return self.image_patch > 0

    @property
    def has_audio(self):
        return self.audio_stack > 0

    @property
    def has_adapters(self):
        return self.has_image or self.has_audio

    @property
    def patch_dim(self):
        return self.image_patch * self.image_patch * self.image_channels

    @property
    def frame_dim(self):
        return self.audio_stack * self.n_mels

    def is_moe(self, l):
        return self.moe_experts > 0 and (l + 1) % self.moe_every == 0

    @property
    def moe_layers(self):
        return [l for l in range(self.n_layers) if self.is_moe(l)]

    def describe(self):
        s = (f"{self.family} V={self.vocab_size} C={self.d_model} L={self.n_layers} H={self.n_heads} "
             f"KVH={self.n_kv_heads} F={self.d_ff}")
        if self.moe_experts:
            s += (f" | MoE E={self.moe_experts} k={self.moe_top_k} every={self.moe_every} "
                  f"F={self.moe_d_ff} capacity={self.moe_capacity:g} shared={int(self.moe_shared_expert)}")
        if self.has_image:
            s += f" | image P={self.image_patch} Ch={self.image_channels} G={self.image_grid}"
        if self.has_audio:
            s += f" | audio S={self.audio_stack} M={self.n_mels}"
        return s


@dataclass
class LossConfig:
    lm: float = 1.0
    align: float = 1.0
    contrastive: float = 0.0
    reconstruction: float = 0.0
    balance: float = 0.0
    router_z: float = 0.0
    distill: float = 0.0
    temperature: float = 0.07
    distill_temperature: float = 1.0

    def weight(self, term):
        return float(getattr(self, term))


@dataclass
class Options:
    """Readings of points docs/model.md leaves open; the defaults are this reference's."""
    # docs/model.md: the teacher sees the batch unmasked (it embeds every media position
    # from its patch / frames). True: it sees the student's masked inputs.
    teacher_sees_mask: bool = False
    # A masked image position still gets row[r] + col[c] ("(or m_img if masked) + row + col").
    masked_image_keeps_pos: bool = True
    # reconstruction = mean over masked positions of (mean over that position's values);
    # "value": one mean over every value of every masked position (differs when image and
    # audio positions, of different sizes, are both masked).
    reconstruction_reduction: str = "item"


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------

def ffn_names(cfg, l, kind, e=None):
    """Parameter name -> shape of one feed-forward of layer l. kind: "dense" (the dense
    MLP, hidden d_ff), "expert" (expert e, hidden moe_d_ff) or "shared" (hidden moe_d_ff).
    The order of the returned dict is the order ffn() consumes the tensors in."""
    C = cfg.d_model
    Fh = cfg.d_ff if kind == "dense" else cfg.moe_d_ff
    if cfg.family == "gpt2":
        p = f"transformer.h.{l}.mlp."
        p += {"dense": "", "expert": f"experts.{e}.", "shared": "shared_expert."}[kind]
        return {p + "c_fc.weight": (Fh, C), p + "c_fc.bias": (Fh,),
                p + "c_proj.weight": (C, Fh), p + "c_proj.bias": (C,)}
    if kind == "dense":
        p = f"model.layers.{l}.mlp."
        return {p + "gate_proj.weight": (Fh, C), p + "up_proj.weight": (Fh, C), p + "down_proj.weight": (C, Fh)}
    if kind == "shared":
        p = f"model.layers.{l}.block_sparse_moe.shared_expert."
        return {p + "gate_proj.weight": (Fh, C), p + "up_proj.weight": (Fh, C), p + "down_proj.weight": (C, Fh)}
    p = f"model.layers.{l}.block_sparse_moe.experts.{e}."
    return {p + "w1.weight": (Fh, C), p + "w3.weight": (Fh, C), p + "w2.weight": (C, Fh)}


def router_name(cfg, l):
    if cfg.family == "gpt2":
        return f"transformer.h.{l}.mlp.router.weight"
    return f"model.layers.{l}.block_sparse_moe.gate.weight"


def param_shapes(cfg):
    """Every parameter of the model: name -> shape (docs/model.md "Parameter names")."""
    C, E = cfg.d_model, cfg.moe_experts
    s = dict(tr.param_shapes(cfg))
    for l in cfg.moe_layers:
        for name in ffn_names(cfg, l, "dense"):
            del s[name]
        s[router_name(cfg, l)] = (E, C)
        for e in range(E):
            s.update(ffn_names(cfg, l, "expert", e))
        if cfg.moe_shared_expert:
            s.update(ffn_names(cfg, l, "shared"))
    P = cfg.prefix
    if cfg.has_image:
        s[P + "image_adapter.proj.weight"] = (C, cfg.patch_dim)
        s[P + "image_adapter.proj.bias"] = (C,)
        s[P + "image_adapter.row_embed"] = (cfg.image_grid, C)
        s[P + "image_adapter.col_embed"] = (cfg.image_grid, C)
        s[P + "image_adapter.mask_embed"] = (C,)
        s["heads.contrastive.image.weight"] = (C, C)
        s["heads.reconstruct.image.weight"] = (cfg.patch_dim, C)
        s["heads.reconstruct.image.bias"] = (cfg.patch_dim,)
    if cfg.has_audio:
        s[P + "audio_adapter.proj.weight"] = (C, cfg.frame_dim)
        s[P + "audio_adapter.proj.bias"] = (C,)
        s[P + "audio_adapter.mask_embed"] = (C,)
        s["heads.contrastive.audio.weight"] = (C, C)
        s["heads.reconstruct.audio.weight"] = (cfg.frame_dim, C)
        s["heads.reconstruct.audio.bias"] = (cfg.frame_dim,)
    if cfg.has_adapters:
        s[P + "modality_embed.weight"] = (4, C)
        s["heads.contrastive.text.weight"] = (C, C)
    return s


def random_params(cfg, seed=0, std=0.1, router_std=None, dtype=torch.float64):
    """Random weights (normal(0, std); norm weights around 1, biases small) for tests."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(param_shapes(cfg).items()):
        t = torch.randn(*shape, generator=g, dtype=torch.float64) * std
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "layernorm.weight", "norm.weight")):
            t = 1.0 + t
        if router_std is not None and (name.endswith("mlp.router.weight") or name.endswith("moe.gate.weight")):
            t = t / std * router_std
        out[name] = t.to(dtype)
    return out


# ---------------------------------------------------------------------------------------
# Batch
# ---------------------------------------------------------------------------------------

class Batch:
    """A micro-batch in the dump's layout, converted to integer tensors / python lists.
    Fields: ids, targets, modality, align, segment_begin, masked (B, T) int64; patches (n, P*P*Ch),
    patch_pos (n,) flat b*T+t, patch_grid (n, 2) (row, col); frames (m, S*M), frame_pos (m,);
    pairs: list of (row, media_modality, media_begin, media_end, text_begin, text_end)."""

    INT_FIELDS = ("ids", "targets", "modality", "align", "segment_begin", "masked")

    def __init__(self, fields):
        def as_int(a):
            a = np.asarray(a, dtype=np.float64)
            r = np.rint(a)
            if not np.all(r == a):
                raise ValueError("batch: a field that must hold integers holds non-integers")
            return torch.from_numpy(r.astype(np.int64))

        for k in self.INT_FIELDS:
            setattr(self, k, as_int(fields[k]))
        self.B, self.T = self.ids.shape
        for k in self.INT_FIELDS:
            if tuple(getattr(self, k).shape) != (self.B, self.T):
                raise ValueError(f"batch: {k} has shape {tuple(getattr(self, k).shape)}, ids {(self.B, self.T)}")
        self.patches = self._matrix(fields["patches"])
        self.patch_pos = as_int(np.asarray(fields["patch_pos"]).reshape(-1))
        self.patch_grid = as_int(np.asarray(fields["patch_grid"]).reshape(-1, 2))
        self.frames = self._matrix(fields["frames"])
        self.frame_pos = as_int(np.asarray(fields["frame_pos"]).reshape(-1))
        pairs = as_int(np.asarray(fields["pairs"]).reshape(-1, 6))
        self.pairs = [tuple(int(v) for v in row) for row in pairs.tolist()]
        self.validate()

    @staticmethod
    def _matrix(a):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            a = a.reshape(len(a), -1) if a.size else np.zeros((len(a), 0))
        return torch.from_numpy(a)

    def validate(self):
        B, T, N = self.B, self.T, self.B * self.T
        mod = self.modality.reshape(-1)
        if not bool(((mod >= 0) & (mod <= 3)).all()):
            raise ValueError("batch: modality outside 0..3")
        for what, pos, kind in (("patch", self.patch_pos, IMAGE), ("frame group", self.frame_pos, AUDIO)):
            seen = pos.tolist()
            if len(set(seen)) != len(seen):
                raise ValueError(f"batch: two {what}s at one position")
            if any(not 0 <= n < N or int(mod[n]) != kind for n in seen):
                raise ValueError(f"batch: a {what} at a position that is not modality {kind}")
            need = int((mod == kind).sum())
            if need != len(seen):
                raise ValueError(f"batch: {need} positions of modality {kind} but {len(seen)} {what}s")
        if len(self.patch_grid) != len(self.patch_pos):
            raise ValueError("batch: patch_grid and patch_pos differ in length")
        for (b, m, mb, me, tb, te) in self.pairs:
            if not (0 <= b < B and m in (IMAGE, AUDIO) and 0 <= mb < me <= T and 0 <= tb < te <= T):
                raise ValueError(f"batch: bad pair {(b, m, mb, me, tb, te)}")
            if not bool((self.modality[b, mb:me] == m).all()):
                raise ValueError(f"batch: pair {(b, m, mb, me, tb, te)}: media range is not all modality {m}")
            if not bool((self.modality[b, tb:te] == TEXT).all()):
                raise ValueError(f"batch: pair {(b, m, mb, me, tb, te)}: caption range is not all text")

    @property
    def media_mask(self):
        return (self.modality == IMAGE) | (self.modality == AUDIO)

    @property
    def masked_media(self):
        """(B, T) bool: media positions whose input is the mask embedding."""
        return (self.masked != 0) & self.media_mask


def key_begin(batch):
    """(B, T) first key of each query: media -> segment_begin; text inside a listed pair's
    caption -> the caption's first position; every other position -> 0."""
    kb = torch.zeros(batch.B, batch.T, dtype=torch.int64)
    media = batch.media_mask
    kb[media] = batch.segment_begin[media]
    for (b, _m, _mb, _me, tb, te) in batch.pairs:
        for t in range(tb, te):
            if int(batch.modality[b, t]) == TEXT:
                kb[b, t] = tb
    return kb


def attention_mask(batch):
    """(B, T, T) bool: allowed[b, t, s] = key_begin[b, t] <= s <= t."""
    kb = key_begin(batch)
    s = torch.arange(batch.T)
    t = torch.arange(batch.T)
    return (s[None, None, :] <= t[None, :, None]) & (s[None, None, :] >= kb[:, :, None])


# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------

def embed(cfg, P, batch, use_mask, opts):
    """(B, T, C) input embeddings (docs/model.md "Embedding")."""
    B, T, C = batch.B, batch.T, cfg.d_model
    if T > cfg.max_seq_len:
        raise ValueError(f"T = {T} > max_seq_len = {cfg.max_seq_len}")
    wte = P[cfg.prefix + ("wte.weight" if cfg.family == "gpt2" else "embed_tokens.weight")]
    ids = batch.ids.reshape(-1)
    masked = batch.masked_media.reshape(-1)
    # Text and padding (and media a model has no adapter for): the token embedding.
    e = [wte[ids[n]] for n in range(B * T)]
    pre = cfg.prefix
    if cfg.has_image:
        for i, n in enumerate(batch.patch_pos.tolist()):
            r, c = (int(v) for v in batch.patch_grid[i])
            if not (0 <= r < cfg.image_grid and 0 <= c < cfg.image_grid):
                raise ValueError(f"patch grid ({r}, {c}) outside image_grid {cfg.image_grid}")
            pos = P[pre + "image_adapter.row_embed"][r] + P[pre + "image_adapter.col_embed"][c]
            if use_mask and bool(masked[n]):
                v = P[pre + "image_adapter.mask_embed"]
                e[n] = v + pos if opts.masked_image_keeps_pos else v
            else:
                p = batch.patches[i].to(wte.dtype)
                e[n] = F.linear(p, P[pre + "image_adapter.proj.weight"], P[pre + "image_adapter.proj.bias"]) + pos
    if cfg.has_audio:
        for i, n in enumerate(batch.frame_pos.tolist()):
            if use_mask and bool(masked[n]):
                e[n] = P[pre + "audio_adapter.mask_embed"]
            else:
                f = batch.frames[i].to(wte.dtype)
                e[n] = F.linear(f, P[pre + "audio_adapter.proj.weight"], P[pre + "audio_adapter.proj.bias"])
    x = torch.stack(e).reshape(B, T, C)
    if cfg.has_adapters:
        x = x + P[pre + "modality_embed.weight"][batch.modality]
    if cfg.family == "gpt2":
        x = x + P["transformer.wpe.weight"][:T].unsqueeze(0)
    return x


def masked_attention(q, k, v, allowed):
    """q: (B, H, T, D); k, v: (B, KVH, T, D); allowed: (B, T, T). Query head h reads kv head
    h // (H / KVH)."""
    D = q.shape[-1]
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    scores = scores.masked_fill(~allowed[:, None, :, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def attention(cfg, P, l, h, allowed, rope):
    H, KVH, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if cfg.family == "gpt2":
        p = f"transformer.h.{l}.attn."
        qkv = F.linear(h, P[p + "c_attn.weight"], P[p + "c_attn.bias"])
        q, k, v = torch.split(qkv, [H * D, KVH * D, KVH * D], dim=-1)
        a = masked_attention(tr.heads(q, H, D), tr.heads(k, KVH, D), tr.heads(v, KVH, D), allowed)
        return F.linear(tr.merge_heads(a), P[p + "c_proj.weight"], P[p + "c_proj.bias"])
    p = f"model.layers.{l}.self_attn."
    cos, sin = rope
    q = tr.heads(F.linear(h, P[p + "q_proj.weight"]), H, D)
    k = tr.heads(F.linear(h, P[p + "k_proj.weight"]), KVH, D)
    v = tr.heads(F.linear(h, P[p + "v_proj.weight"]), KVH, D)
    q = q * cos + tr.rotate_half(q) * sin
    k = k * cos + tr.rotate_half(k) * sin
    return F.linear(tr.merge_heads(masked_attention(q, k, v, allowed)), P[p + "o_proj.weight"])


def ffn(cfg, P, names, x):
    """The family's feed-forward with the tensors `names` (an ffn_names dict)."""
    w = [P[n] for n in names]
    if cfg.family == "gpt2":
        fc_w, fc_b, proj_w, proj_b = w
        return F.linear(tr.gelu_tanh(F.linear(x, fc_w, fc_b)), proj_w, proj_b)
    w1, w3, w2 = w
    return F.linear(tr.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def route(probs, k):
    """Top-k experts of every row, by descending probability, ties to the lower index
    (a stable ordering on (-prob, index), made on the float64 values)."""
    E = probs.shape[1]
    p = probs.detach().tolist()
    return [sorted(range(E), key=lambda e: (-row[e], e))[:k] for row in p]


def capacity_of(cfg, N):
    """Per-expert capacity; None = dropless."""
    if cfg.moe_capacity <= 0:
        return None
    return int(math.ceil(cfg.moe_capacity * N * cfg.moe_top_k / cfg.moe_experts))


def moe(cfg, P, l, x):
    """x: (N, C) rows (the block's second-norm output). Returns (y (N, C), stats dict)."""
    N = x.shape[0]
    E, k = cfg.moe_experts, cfg.moe_top_k
    logits = F.linear(x, P[router_name(cfg, l)])  # (N, E), no bias
    probs = torch.softmax(logits, dim=-1)
    choice = route(probs, k)  # choice[n][j] = e_j of token n

    # Gates (differentiable through the probabilities; the choice itself is not).
    gates = []
    for n in range(N):
        sel = [probs[n, e] for e in choice[n]]
        if k == 1:
            gates.append(sel)
        else:
            denom = sum(sel[1:], sel[0])
            gates.append([g / denom for g in sel])

    # Capacity: choice by choice, token order within a choice.
    cap = capacity_of(cfg, N)
    load = [0] * E
    kept = [[False] * k for _ in range(N)]
    dropped = 0
    for j in range(k):
        for n in range(N):
            e = choice[n][j]
            if cap is None or load[e] < cap:
                kept[n][j] = True
                load[e] += 1
            else:
                dropped += 1

    # Combine: y[n] = sum over kept j of gate_j * expert_{e_j}(x[n]) (+ shared(x[n])).
    zero = x.new_zeros(cfg.d_model)
    rows = []
    for n in range(N):
        acc = zero
        for j in range(k):
            if kept[n][j]:
                acc = acc + gates[n][j] * ffn(cfg, P, ffn_names(cfg, l, "expert", choice[n][j]), x[n])
        rows.append(acc)
    y = torch.stack(rows)
    if cfg.moe_shared_expert:
        y = y + ffn(cfg, P, ffn_names(cfg, l, "shared"), x)

    # Router losses: f_e from assignments before dropping (a constant), P_e mean prob.
    assigned = [0] * E
    for n in range(N):
        for e in choice[n]:
            assigned[e] += 1
    f = [a / (N * k) for a in assigned]
    balance = E * sum(f[e] * probs[:, e].mean() for e in range(E))
    router_z = (torch.logsumexp(logits, dim=-1) ** 2).mean()

    # Smallest gap between the k-th and (k+1)-th probability (a near-tie could be ordered
    # differently by a float32 implementation); inf when k = E.
    margin = math.inf
    if k < E:
        sp = probs.detach().sort(dim=-1, descending=True).values
        margin = float((sp[:, k - 1] - sp[:, k]).min())
    stats = dict(layer=l, dropped=dropped, capacity=cap, assigned=assigned, kept=load, margin=margin,
                 choice=choice, kept_mask=kept)
    return y, balance, router_z, stats


def trunk(cfg, P, batch, use_mask=True, opts=None):
    """Runs the model. Returns (h: final-norm output (B, T, C), logits (B, T, V), moe results
    [(balance, router_z, stats)])."""
    opts = opts or Options()
    B, T, C = batch.B, batch.T, cfg.d_model
    allowed = attention_mask(batch)
    x = embed(cfg, P, batch, use_mask, opts)
    rope = None
    if cfg.family == "llama":
        rope = tr.rope_cos_sin(T, cfg.head_dim, cfg.rope_theta, x.dtype)
    moe_out = []
    for l in range(cfg.n_layers):
        if cfg.family == "gpt2":
            p = f"transformer.h.{l}."
            h = tr.layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], cfg.norm_eps)
            x = x + attention(cfg, P, l, h, allowed, rope)
            h = tr.layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], cfg.norm_eps)
        else:
            p = f"model.layers.{l}."
            h = tr.rms_norm(x, P[p + "input_layernorm.weight"], cfg.norm_eps)
            x = x + attention(cfg, P, l, h, allowed, rope)
            h = tr.rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        if cfg.is_moe(l):
            y, bal, z, stats = moe(cfg, P, l, h.reshape(B * T, C))
            x = x + y.reshape(B, T, C)
            moe_out.append((bal, z, stats))
        else:
            x = x + ffn(cfg, P, ffn_names(cfg, l, "dense"), h)
    if cfg.family == "gpt2":
        h = tr.layer_norm(x, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], cfg.norm_eps)
        z = h @ P["transformer.wte.weight"].t()  # tied head
    else:
        h = tr.rms_norm(x, P["model.norm.weight"], cfg.norm_eps)
        z = F.linear(h, P["lm_head.weight"])
    return h, z, moe_out


# ---------------------------------------------------------------------------------------
# Loss terms
# ---------------------------------------------------------------------------------------

def contrastive_loss(cfg, P, batch, h, temperature):
    a, b = [], []
    for (row, m, mb, me, tb, te) in batch.pairs:
        head = "heads.contrastive." + ("image" if m == IMAGE else "audio") + ".weight"
        a.append(F.linear(h[row, mb:me].mean(dim=0), P[head]))
        b.append(F.linear(h[row, tb:te].mean(dim=0), P["heads.contrastive.text.weight"]))
    a = torch.stack(a)
    b = torch.stack(b)
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    S = a @ b.t() / temperature
    target = torch.arange(len(batch.pairs))
    return 0.5 * (F.cross_entropy(S, target) + F.cross_entropy(S.t(), target))


def reconstruction_loss(cfg, P, batch, h, opts):
    """None when no masked media position has a head."""
    per_item, sq_sum, count = [], 0.0, 0
    masked = batch.masked_media
    sources = []
    if cfg.has_image:
        sources.append(("image", batch.patch_pos, batch.patches))
    if cfg.has_audio:
        sources.append(("audio", batch.frame_pos, batch.frames))
    for kind, pos, values in sources:
        W, bias = P[f"heads.reconstruct.{kind}.weight"], P[f"heads.reconstruct.{kind}.bias"]
        for i, n in enumerate(pos.tolist()):
            b, t = divmod(n, batch.T)
            if not bool(masked[b, t]):
                continue
            d = F.linear(h[b, t], W, bias) - values[i].to(h.dtype)
            per_item.append((d * d).mean())
            sq_sum = sq_sum + (d * d).sum()
            count += d.numel()
    if not per_item:
        return None
    if opts.reconstruction_reduction == "value":
        return sq_sum / count
    return torch.stack(per_item).mean()


def forward(cfg, loss_cfg, params, batch, teacher=None, opts=None):
    """The micro-batch's loss terms. params: name -> tensor (float64, requires_grad as
    wanted); batch: a Batch or a dict of numpy arrays in the dump's layout; teacher:
    (teacher_cfg, teacher_params) or None. Returns a dict with every term that has items
    (torch scalars; a term is computed whatever its weight, distill only with a teacher),
    "total" = sum of weight * term, "dropped" (per MoE layer, python ints) and "moe" (the
    per-layer routing statistics)."""
    opts = opts or Options()
    if not isinstance(batch, Batch):
        batch = Batch(batch)
    h, z, moe_out = trunk(cfg, params, batch, use_mask=True, opts=opts)
    out = {}
    V = cfg.vocab_size
    tgt, align = batch.targets, batch.align
    for term, sel in (("lm", (tgt >= 0) & (align == 0)), ("align", (tgt >= 0) & (align != 0))):
        if bool(sel.any()):
            out[term] = F.cross_entropy(z[sel].reshape(-1, V), tgt[sel].reshape(-1))
    if len(batch.pairs) >= 2 and cfg.has_adapters:
        out["contrastive"] = contrastive_loss(cfg, params, batch, h, loss_cfg.temperature)
    rec = reconstruction_loss(cfg, params, batch, h, opts)
    if rec is not None:
        out["reconstruction"] = rec
    if moe_out:
        out["balance"] = torch.stack([m[0] for m in moe_out]).mean()
        out["router_z"] = torch.stack([m[1] for m in moe_out]).mean()
    if teacher is not None:
        t_cfg, t_params = teacher
        if t_cfg.vocab_size != cfg.vocab_size:
            raise ValueError(f"teacher vocab {t_cfg.vocab_size} != student vocab {cfg.vocab_size}")
        with torch.no_grad():
            _, zt, _ = trunk(t_cfg, t_params, batch, use_mask=opts.teacher_sees_mask, opts=opts)
        sel = tgt >= 0
        if bool(sel.any()):
            T_ = loss_cfg.distill_temperature
            log_ps = torch.log_softmax(z[sel] / T_, dim=-1)
            log_pt = torch.log_softmax(zt[sel].to(z.dtype) / T_, dim=-1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
            out["distill"] = T_ * T_ * kl.mean()
    total = None
    for term in TERMS:
        if term in out:
            w = loss_cfg.weight(term)
            total = w * out[term] if total is None else total + w * out[term]
    out["total"] = total if total is not None else z.new_zeros(())
    out["dropped"] = [m[2]["dropped"] for m in moe_out]
    out["moe"] = [m[2] for m in moe_out]
    return out


# ---------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------

def _self_test():
    torch.manual_seed(0)
    dt = torch.float64
    for family in ("gpt2", "llama"):
        # 1. k = E, dropless: every gate renormalised over all experts equals the probability,
        # so the MoE output is sum_e probs_e * expert_e(x) (+ shared).
        for shared in (False, True):
            cfg = Config(family, 11, 16, 1, 2, 1, 0, 8, 1e-5, 10000.0, moe_experts=4, moe_top_k=4,
                         moe_every=1, moe_d_ff=24, moe_capacity=0.0, moe_shared_expert=shared)
            P = random_params(cfg, seed=1, std=0.3)
            x = torch.randn(10, 16, dtype=dt)
            y, _, _, st = moe(cfg, P, 0, x)
            probs = torch.softmax(F.linear(x, P[router_name(cfg, 0)]), dim=-1)
            want = sum(probs[:, e:e + 1] * ffn(cfg, P, ffn_names(cfg, 0, "expert", e), x) for e in range(4))
            if shared:
                want = want + ffn(cfg, P, ffn_names(cfg, 0, "shared"), x)
            assert torch.allclose(y, want, rtol=1e-12, atol=1e-12), (family, shared, float((y - want).abs().max()))
            assert st["dropped"] == 0

        # 2. Top-1 keeps the raw probability (not 1).
        cfg = Config(family, 11, 16, 1, 2, 1, 0, 8, 1e-5, 10000.0, moe_experts=4, moe_top_k=1, moe_d_ff=24)
        P = random_params(cfg, seed=2, std=0.3)
        x = torch.randn(6, 16, dtype=dt)
        y, _, _, st = moe(cfg, P, 0, x)
        probs = torch.softmax(F.linear(x, P[router_name(cfg, 0)]), dim=-1)
        for n in range(6):
            e = int(probs[n].argmax())
            assert st["choice"][n] == [e]
            assert torch.allclose(y[n], probs[n, e] * ffn(cfg, P, ffn_names(cfg, 0, "expert", e), x[n]))

        # 3. Ties go to the lower index; capacity fills choice by choice: with a zero router
        # every token picks experts 0, 1 (in that order); capacity ceil(0.5*8*2/4) = 2 keeps the
        # first choices of tokens 0, 1 (expert 0) and second choices of tokens 0, 1 (expert 1).
        cfg = Config(family, 11, 16, 1, 2, 1, 0, 8, 1e-5, 10000.0, moe_experts=4, moe_top_k=2, moe_d_ff=24,
                     moe_capacity=0.5)
        P = random_params(cfg, seed=3, std=0.3)
        P[router_name(cfg, 0)] = torch.zeros(4, 16, dtype=dt)
        x = torch.randn(8, 16, dtype=dt)
        y, bal, _, st = moe(cfg, P, 0, x)
        assert all(c == [0, 1] for c in st["choice"])
        assert st["kept"] == [2, 2, 0, 0] and st["dropped"] == 12
        assert [kk for kk in st["kept_mask"][:3]] == [[True, True], [True, True], [False, False]]
        assert torch.allclose(y[2:], torch.zeros_like(y[2:]))
        e0 = ffn(cfg, P, ffn_names(cfg, 0, "expert", 0), x[0])
        e1 = ffn(cfg, P, ffn_names(cfg, 0, "expert", 1), x[0])
        assert torch.allclose(y[0], 0.5 * e0 + 0.5 * e1)
        assert abs(float(bal) - 4 * (0.5 * 0.25 + 0.5 * 0.25)) < 1e-12  # E * sum f_e P_e = 1

        # 4. Priority: a token loses its second expert before any token loses its first.
        cfg = Config(family, 11, 16, 1, 2, 1, 0, 8, 1e-5, 10000.0, moe_experts=4, moe_top_k=2, moe_d_ff=24,
                     moe_capacity=0.75)
        P = random_params(cfg, seed=4, std=0.3, router_std=2.0)
        x = torch.randn(40, 16, dtype=dt)
        _, _, _, st = moe(cfg, P, 0, x)
        cap = capacity_of(cfg, 40)
        assert cap == 15 and max(st["kept"]) <= cap and st["dropped"] > 0
        for e in range(4):
            first_dropped = any(st["choice"][n][0] == e and not st["kept_mask"][n][0] for n in range(40))
            second_kept = any(st["choice"][n][1] == e and st["kept_mask"][n][1] for n in range(40))
            assert not (first_dropped and second_kept), e

        # 5. A text-only dense model on a text-only batch is exactly torch_reference's model.
        cfg = Config(family, 13, 16, 2, 4, 2, 0, 12, 1e-5, 10000.0)
        P = random_params(cfg, seed=5, std=0.2)
        B, T = 2, 10
        g = torch.Generator().manual_seed(5)
        ids = torch.randint(0, 13, (B, T), generator=g)
        targets = torch.randint(0, 13, (B, T), generator=g)
        targets[0, 3] = -1
        zeros = np.zeros((B, T))
        batch = dict(ids=ids.numpy(), targets=targets.numpy(), modality=zeros, align=zeros,
                     segment_begin=zeros, masked=zeros, patches=np.zeros((0, 1)), patch_pos=np.zeros(0),
                     patch_grid=np.zeros((0, 2)), frames=np.zeros((0, 1)), frame_pos=np.zeros(0),
                     pairs=np.zeros((0, 6)))
        out = forward(cfg, LossConfig(), P, batch)
        dense = tr.loss(cfg, P, ids, targets)
        assert set(k for k in out if k in TERMS) == {"lm"}
        assert abs(float(out["lm"]) - float(dense)) < 1e-12, (float(out["lm"]), float(dense))
        assert abs(float(out["total"]) - float(dense)) < 1e-12

        # 6. A small multimodal batch: row 0 = text 0..1 | image 2x2 at 2..5 (position 3 masked)
        # | caption 6..8 | text 9..11; row 1 = audio 0..1 (position 1 masked) | transcript 2..4 |
        # pad 5..11.
        cfg = Config(family, 13, 16, 2, 4, 2, 0, 12, 1e-5, 10000.0, moe_experts=4, moe_top_k=2, moe_every=2,
                     moe_d_ff=20, moe_capacity=1.0, moe_shared_expert=True, image_patch=2, image_channels=1,
                     image_grid=2, audio_stack=2, n_mels=3)
        P = {n: t.requires_grad_(True) for n, t in random_params(cfg, seed=6, std=0.3).items()}
        B, T = 2, 12
        g.manual_seed(6)
        ids = torch.randint(1, 13, (B, T), generator=g).numpy()
        mod = np.zeros((B, T))
        mod[0, 2:6] = IMAGE
        mod[1, 0:2] = AUDIO
        mod[1, 5:] = PAD
        seg = np.zeros((B, T))
        seg[0, 2:6], seg[0, 6:9], seg[0, 9:] = 2, 6, 9
        seg[1, 2:5] = 2
        masked = np.zeros((B, T))
        masked[0, 3] = masked[1, 1] = 1
        targets = np.where(mod == TEXT, ids, -1)
        align = np.zeros((B, T))
        align[1, :5] = 1
        rng = np.random.default_rng(6)
        batch = dict(ids=ids, targets=targets, modality=mod, align=align, segment_begin=seg, masked=masked,
                     patches=rng.random((4, 4)), patch_pos=np.arange(2, 6), patch_grid=[[0, 0], [0, 1], [1, 0], [1, 1]],
                     frames=rng.normal(size=(2, 6)), frame_pos=np.array([T, T + 1]),
                     pairs=np.array([[0, IMAGE, 2, 6, 6, 9], [1, AUDIO, 0, 2, 2, 5]]))
        loss_cfg = LossConfig(lm=1.0, align=0.5, contrastive=0.3, reconstruction=2.0, balance=0.1, router_z=0.01,
                              distill=0.4, temperature=0.2, distill_temperature=1.5)
        t_cfg = Config("gpt2", 13, 8, 1, 2, 2, 16, 12, 1e-5, 10000.0, audio_stack=2, n_mels=3)
        teacher = (t_cfg, random_params(t_cfg, seed=7, std=0.3))
        out = forward(cfg, loss_cfg, P, batch, teacher=teacher)
        assert set(k for k in out if k in TERMS) == set(TERMS), sorted(out)

        # a. Media and caption positions do not see what precedes their segment / caption; the
        # plain text after the caption sees the whole row.
        h0, _, _ = trunk(cfg, P, Batch(batch))
        ids2 = ids.copy()
        ids2[0, 0:2] = (ids2[0, 0:2] % 12) + 1
        h1, _, _ = trunk(cfg, P, Batch(dict(batch, ids=ids2)))
        assert torch.allclose(h0[0, 2:9], h1[0, 2:9], rtol=0, atol=1e-12)
        assert not torch.allclose(h0[0, 9:], h1[0, 9:])
        patches2 = batch["patches"].copy()
        patches2[0] += 0.5  # the image changes: the caption must not notice
        h2, _, _ = trunk(cfg, P, Batch(dict(batch, patches=patches2)))
        assert torch.allclose(h0[0, 6:9], h2[0, 6:9], rtol=0, atol=1e-12)
        assert not torch.allclose(h0[0, 2:6], h2[0, 2:6]) and not torch.allclose(h0[0, 9:], h2[0, 9:])
        patches3 = batch["patches"].copy()
        patches3[1] += 0.5  # position 3 is masked: its patch only enters the reconstruction target
        h3, _, _ = trunk(cfg, P, Batch(dict(batch, patches=patches3)))
        assert torch.allclose(h0, h3, rtol=0, atol=1e-12)

        # b. Autograd against a central difference along a random direction (no routing change).
        out["total"].backward()
        names = sorted(P)
        gen = torch.Generator().manual_seed(8)
        d = {n: torch.randn(P[n].shape, generator=gen, dtype=dt) for n in names}
        analytic = sum(float((P[n].grad * d[n]).sum()) for n in names)
        eps = 1e-6
        with torch.no_grad():
            vals = []
            for s in (1, -1):
                Q = {n: P[n] + s * eps * d[n] for n in names}
                o = forward(cfg, loss_cfg, Q, batch, teacher=teacher)
                assert all(a["choice"] == b["choice"] for a, b in zip(o["moe"], out["moe"]))
                vals.append(float(o["total"]))
        numeric = (vals[0] - vals[1]) / (2 * eps)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (family, numeric, analytic)
    print("multimodal_reference self-test: OK")


if __name__ == "__main__":
    _self_test()
