#!/usr/bin/env python3
# The PyTorch eager peer of castor's GPU training: "dense-m" (GPT-2 medium shape: LayerNorm,
# tanh-GELU MLP, learned positions, tied head, biases; d_model 1024, 24 layers, 16 heads,
# seq 1024, vocab 50257, MLP 4096) and "moe-m" (the same trunk with every other layer's MLP
# replaced by 8 experts of 1024->4096->1024, softmax router, top-2 gates renormalised, dropless
# index_select / index_add_ dispatch), the models of examples/dense-m.ini and examples/moe-m.ini.
# Precision: fp32 parameters (the master copy) under torch.autocast(bfloat16), i.e. bf16 GEMMs
# and attention with fp32 norms, softmax and cross-entropy; torch.optim.AdamW(fused=True) on the
# fp32 parameters; F.scaled_dot_product_attention(is_causal=True). Random tokens, fixed seed.
# One step = zero_grad, forward + cross-entropy (+ MoE balance loss), backward,
# clip_grad_norm_(1.0), AdamW step, timed with torch.cuda.synchronize on both sides.
# MFU = tokens/s x model FLOPs per token / 989e12 (H100 SXM dense bf16), FLOPs per token as
# castor's launch::model_flops_per_token. Not a test: nothing asserts on a timing.
import argparse
import gc
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

H100_BF16_PEAK = 989e12


class Config:
    def __init__(self, tiny, moe):
        if tiny:  # a CPU smoke run: same code paths, seconds on two cores
            self.vocab, self.d_model, self.n_layers, self.n_heads, self.seq, self.d_ff = 512, 64, 2, 4, 64, 256
        else:
            self.vocab, self.d_model, self.n_layers, self.n_heads, self.seq, self.d_ff = 50257, 1024, 24, 16, 1024, 4096
        self.max_seq = self.seq
        self.moe_experts = 8 if moe else 0
        self.moe_top_k = 2
        self.moe_every = 2  # layers 1, 3, 5, ... (castor's --model.moe_every 2)
        self.balance = 0.01  # castor's default --loss.balance

    def is_moe_layer(self, layer):
        return self.moe_experts > 0 and (layer + 1) % self.moe_every == 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0 (Debian's 1.13, CPU smoke runs only)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Mlp(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_ff)
        self.c_proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Moe(nn.Module):
    """Top-k of E experts per token; softmax router (no bias), gates renormalised over the
    chosen k; every routed token is computed (no capacity). Dispatch: sort the (token, expert)
    pairs by expert, then per expert index_select its rows, run the MLP, scale by the gate and
    index_add_ into the output. One host sync per layer (the per-expert counts)."""

    def __init__(self, cfg):
        super().__init__()
        self.k = cfg.moe_top_k
        self.router = nn.Linear(cfg.d_model, cfg.moe_experts, bias=False)
        self.experts = nn.ModuleList([Mlp(cfg.d_model, cfg.d_ff) for _ in range(cfg.moe_experts)])
        self.aux = None

    def forward(self, x):
        B, T, C = x.shape
        E = len(self.experts)
        xf = x.reshape(-1, C)
        probs = F.softmax(self.router(xf).float(), dim=-1)  # (N, E)
        top_p, top_e = probs.topk(self.k, dim=-1)  # (N, k)
        gates = top_p / top_p.sum(dim=-1, keepdim=True)
        flat_e = top_e.reshape(-1)
        order = torch.argsort(flat_e)
        token_of = torch.arange(xf.shape[0], device=x.device).repeat_interleave(self.k)[order]
        gate_of = gates.reshape(-1)[order]
        counts = torch.bincount(flat_e, minlength=E)
        # load-balance loss E * sum_e f_e P_e (f: fraction of routed slots, P: mean router prob)
        self.aux = E * torch.sum(counts.float() / flat_e.numel() * probs.mean(dim=0))
        out = torch.zeros_like(xf)
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            idx = token_of[start:start + n]
            y = self.experts[e](xf.index_select(0, idx)) * gate_of[start:start + n, None]
            out.index_add_(0, idx, y.to(out.dtype))
            start += n
        return out.view(B, T, C)


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.mlp = Moe(cfg) if cfg.is_moe_layer(layer) else Mlp(cfg.d_model, cfg.d_ff)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq, cfg.d_model)
        self.h = nn.ModuleList([Block(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1))
        aux = [b.mlp.aux for b in self.h if isinstance(b.mlp, Moe)]
        if aux:
            loss = loss + self.cfg.balance * torch.stack(aux).sum()
        return loss

    def active_non_embedding_params(self):
        """castor's ModelConfig::non_embedding_params(): everything but wte and wpe, counting
        only top-k experts per MoE layer (the router counts whole)."""
        total = sum(p.numel() for p in self.parameters()) - self.wte.weight.numel() - self.wpe.weight.numel()
        for b in self.h:
            if isinstance(b.mlp, Moe):
                per_expert = sum(p.numel() for p in b.mlp.experts[0].parameters())
                total -= (len(b.mlp.experts) - b.mlp.k) * per_expert
        return total


def is_oom(err):
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(err, oom_type)) or "out of memory" in str(err)


def run(args, cfg, micro_batch, device):
    """Builds the model and optimizer, runs warmup + timed steps; returns the result dict."""
    torch.manual_seed(args.seed)
    try:  # initialise on the device itself (torch >= 2.0): moe-m's 1.06B parameters on CPU take a while
        with device:
            model = Gpt(cfg)
    except (AttributeError, TypeError):
        model = Gpt(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    fused = False
    try:
        optim = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
        fused = True
    except (TypeError, RuntimeError, ValueError):  # old torch, or no fused kernel for this device
        optim = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8)

    gen = torch.Generator().manual_seed(args.seed)
    pool = [torch.randint(0, cfg.vocab, (micro_batch, cfg.seq + 1), generator=gen).to(device) for _ in range(4)]
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step(i):
        batch = pool[i % len(pool)]
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        loss = step(i)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    med = statistics.median(times)
    tokens = micro_batch * cfg.seq
    flops_per_token = (6.0 * model.active_non_embedding_params() + 6.0 * cfg.d_model * cfg.vocab +
                       12.0 * cfg.n_layers * cfg.d_model * cfg.seq)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "active_non_embedding": model.active_non_embedding_params(),
        "flops_per_token": flops_per_token,
        "median_ms": med * 1e3, "best_ms": min(times) * 1e3,
        "tokens_per_s": tokens / med, "mfu": tokens / med * flops_per_token / H100_BF16_PEAK,
        "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "fused_adamw": fused, "first_loss": losses[0], "last_loss": losses[-1],
    }


def main():
    ap = argparse.ArgumentParser(
        description="PyTorch eager training-step throughput of dense-m / moe-m (bf16 autocast, fp32 master "
        "weights, fused AdamW, SDPA): median step time, tokens/s and MFU against 989 TFLOP/s")
    ap.add_argument("--model", choices=["dense", "moe"], default="dense")
    ap.add_argument("--micro-batch", type=int, default=0, help="sequences per step (default 16 dense, 8 moe)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2 layers, d_model 64, seq 64, vocab 512 (CPU smoke run)")
    ap.add_argument("--json", metavar="FILE", help="append one JSON line with the result")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    if args.steps <= 0 or args.warmup < 0 or args.micro_batch < 0:
        ap.error("--steps must be positive, --warmup and --micro-batch >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_gpt_m: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 1

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = Config(args.tiny, args.model == "moe")
    name = ("tiny-" if args.tiny else "") + args.model + "-m"
    micro_batch = args.micro_batch or (16 if args.model == "dense" else 8)
    note = ""
    result = None
    for attempt in range(2):
        failed = None
        try:
            result = run(args, cfg, micro_batch, device)
        except RuntimeError as err:
            if not is_oom(err) or attempt == 1 or micro_batch == 1:
                if is_oom(err):
                    print(f"torch_gpt_m: {name}: out of memory at micro-batch {micro_batch} too; giving up",
                          file=sys.stderr)
                    return 1
                raise
            failed = micro_batch
        if result is not None:
            break
        gc.collect()  # the exception (and the model it referenced) is gone: free the cache
        if device.type == "cuda":
            torch.cuda.empty_cache()
        micro_batch = failed // 2
        note = f"OOM at micro-batch {failed}, halved to {micro_batch}"
        print(f"torch_gpt_m: {name}: CUDA out of memory at micro-batch {failed}; retrying with {micro_batch}",
              flush=True)

    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    r = result
    print(f"{name}: {r['params'] / 1e6:.1f}M params, {r['active_non_embedding'] / 1e6:.1f}M active non-embedding, "
          f"{r['flops_per_token'] / 1e9:.3f} GFLOP/token; torch {torch.__version__} on {dev_name}; "
          f"bf16 autocast, fp32 master weights, AdamW fused={r['fused_adamw']}; loss {r['first_loss']:.3f} -> "
          f"{r['last_loss']:.3f}")
    mem = f"{r['peak_mem_mib']:.0f} MiB" if r["peak_mem_mib"] is not None else "-"
    print("| impl | model | batch | median ms/step | best ms | tokens/s | MFU | peak mem | note |")
    print(f"| pytorch {torch.__version__} eager | {name} | {micro_batch} x {cfg.seq} | {r['median_ms']:.1f} | "
          f"{r['best_ms']:.1f} | {r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {mem} | {note} |")
    if args.json:
        line = dict(impl="pytorch-eager", torch=torch.__version__, model=name, device=dev_name,
                    micro_batch=micro_batch, seq=cfg.seq, steps=args.steps, warmup=args.warmup,
                    precision="bf16 autocast, fp32 master weights", note=note, **r)
        with open(args.json, "a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
