#!/usr/bin/python3
# The peer of castor_bench_dense_s: the same "dense-s" GPT-2 model (vocab 50257, d_model
# 384, 6 layers, 6 heads, max_seq_len 1024, tied head, batch 4 x 256, fp32) in PyTorch
# eager, written plainly as a user would, timing the same training step: zero_grad,
# forward + cross-entropy, backward, clip_grad_norm_, AdamW step. The last line,
# "RESULT key=value ...", is what bench/dense_s.sh reads. Not a test: no assertions.
# Written for Debian's python3-torch 1.13 (no scaled_dot_product_attention there).
import argparse
import math
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, D_MODEL, N_LAYERS, N_HEADS, MAX_SEQ = 50257, 384, 6, 6, 1024
BATCH, SEQ = 4, 256


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.c_proj = nn.Linear(D_MODEL, D_MODEL)
        mask = torch.tril(torch.ones(MAX_SEQ, MAX_SEQ, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, MAX_SEQ, MAX_SEQ), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hd = C // N_HEADS
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, N_HEADS, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, N_HEADS, hd).transpose(1, 2)
        v = v.view(B, T, N_HEADS, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(D_MODEL, 4 * D_MODEL)
        self.c_proj = nn.Linear(4 * D_MODEL, D_MODEL)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D_MODEL, eps=1e-5)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(D_MODEL, eps=1e-5)
        self.mlp = Mlp()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt2(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D_MODEL)
        self.wpe = nn.Embedding(MAX_SEQ, D_MODEL)
        self.h = nn.ModuleList([Block() for _ in range(N_LAYERS)])
        self.ln_f = nn.LayerNorm(D_MODEL, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * N_LAYERS) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)  # tied head
        return F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1))


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_mm_peak():
    """torch.mm rate on 768 x 768 fp32 (a @ b^T, like castor's measure_sgemm_peak): best of 15
    timed products, as many as the castor benchmark's 5 calls of measure_sgemm_peak."""
    n = 768
    a = torch.full((n, n), 0.5)
    b = torch.full((n, n), 0.25)
    best = 0.0
    for rep in range(16):
        t0 = time.perf_counter()
        torch.mm(a, b.t())
        s = time.perf_counter() - t0
        if rep > 0:
            best = max(best, 2.0 * n * n * n / s)
    return best


def current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_kernels(gen, fwd_ms, bwd_ms):
    """The fused head's work (logits, xent, dx, dW) and one layer's attention, alone."""
    N, C = BATCH * SEQ, D_MODEL
    x = torch.randn(N, C, generator=gen, requires_grad=True)
    w = (0.02 * torch.randn(VOCAB, C, generator=gen)).requires_grad_()
    t = torch.randint(0, VOCAB, (N,), generator=gen)

    def head_train():
        x.grad = None
        w.grad = None
        F.cross_entropy(F.linear(x, w), t).backward()

    def head_eval():
        with torch.no_grad():
            F.cross_entropy(F.linear(x, w), t)

    attn = CausalSelfAttention()
    hd = C // N_HEADS
    q, k, v = (torch.randn(BATCH, N_HEADS, SEQ, hd, generator=gen, requires_grad=True) for _ in range(3))
    mask = attn.mask[:, :, :SEQ, :SEQ]

    def sdpa():
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(~mask, float("-inf"))
        return F.softmax(att, dim=-1) @ v

    dy = torch.randn(BATCH, N_HEADS, SEQ, hd, generator=gen)

    def attn_fwd():
        with torch.no_grad():
            sdpa()

    def attn_fwd_bwd():
        q.grad = k.grad = v.grad = None
        sdpa().backward(dy)

    ht, he = median_ms(head_train, 3), median_ms(head_eval, 3)
    af, afb = median_ms(attn_fwd, 5), median_ms(attn_fwd_bwd, 5)
    gflop = 3 * 2.0 * N * C * VOCAB / 1e9
    print("\nops alone (median, same shapes as one step):")
    print(f"  head train (F.linear + cross_entropy + backward)     {ht:8.1f} ms  ({gflop / (ht / 1e3):.1f} GFLOP/s)")
    print(f"  head eval  (F.linear + cross_entropy, no_grad)       {he:8.1f} ms")
    print(f"  attention forward, one layer (x{N_LAYERS} per step)         {af:8.2f} ms")
    print(f"  attention backward, one layer (fwd+bwd - fwd)        {afb - af:8.2f} ms")
    print(f"  => step forward minus head eval (blocks + embeddings forward)  ~{fwd_ms - he:.0f} ms")
    print(f"  => step backward minus head backward (blocks + embeddings backward)  ~{bwd_ms - (ht - he):.0f} ms")


def main():
    ap = argparse.ArgumentParser(description="PyTorch eager training-step throughput of the dense-s model")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--peak-gflops", type=float, default=0.0,
                    help="MFU reference in GFLOP/s (castor's measured SGEMM peak); 0: this script's torch.mm rate")
    ap.add_argument("--kernels", action="store_true", help="also time the head and attention ops alone")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    if args.steps <= 0 or args.warmup < 0 or args.threads <= 0:
        ap.error("--steps and --threads must be positive, --warmup >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Gpt2()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=6e-4, betas=(0.9, 0.95), eps=1e-8)  # foreach: default (None -> False in 1.13)

    n_params = sum(p.numel() for p in model.parameters())
    n_non_emb = n_params - model.wte.weight.numel() - model.wpe.weight.numel()
    flops_per_token = 6.0 * n_non_emb + 6.0 * D_MODEL * VOCAB + 12.0 * N_LAYERS * D_MODEL * SEQ  # DESIGN.md 6
    mm_peak = measure_mm_peak()
    if args.peak_gflops > 0:
        peak, peak_src = args.peak_gflops * 1e9, "--peak-gflops (dense_s.sh passes castor's reference)"
    else:
        peak, peak_src = mm_peak, "this script's torch.mm 768^3 rate"
    print(f"torch {torch.__version__} dense-s: gpt2, {N_LAYERS} layers, d_model {D_MODEL}, {N_HEADS} heads, "
          f"vocab {VOCAB}, max_seq_len {MAX_SEQ}, {n_params / 1e6:.2f}M params ({n_non_emb / 1e6:.2f}M non-embedding)")
    print(f"batch {BATCH} x {SEQ}, fp32, threads {torch.get_num_threads()}; "
          f"torch.mm 768^3 {mm_peak / 1e9:.1f} GFLOP/s; MFU reference {peak / 1e9:.1f} GFLOP/s = {peak_src}; "
          f"model FLOPs {flops_per_token / 1e6:.1f} MFLOP/token")
    print(f"steps: {args.warmup} warmup + {args.steps} timed", flush=True)

    # A fixed pool of random token windows of SEQ + 1, like the castor benchmark.
    gen = torch.Generator().manual_seed(args.seed)
    pool = [torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=gen) for _ in range(8)]

    phases = {"zero": [], "fwd": [], "bwd": [], "opt": [], "step": []}
    first_loss = last_loss = float("nan")
    total = args.warmup + args.steps
    for step in range(total):
        window = pool[step % len(pool)]
        idx, targets = window[:, :-1], window[:, 1:]
        t0 = time.perf_counter()
        optim.zero_grad()
        t1 = time.perf_counter()
        loss = model(idx, targets)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        t4 = time.perf_counter()
        last_loss = loss.item()
        if step == 0:
            first_loss = last_loss
        if step >= args.warmup:
            for key, a, b in (("zero", t0, t1), ("fwd", t1, t2), ("bwd", t2, t3), ("opt", t3, t4), ("step", t0, t4)):
                phases[key].append((b - a) * 1e3)

    med = {k: statistics.median(v) for k, v in phases.items()}
    step_ms = med["step"]
    tokens_per_s = BATCH * SEQ / (step_ms / 1e3)
    mfu = tokens_per_s * flops_per_token / peak
    peak_rss = peak_rss_mib()  # before the ops-alone timings, which allocate their own tensors
    print(f"loss: step 1 {first_loss:.4f}, step {total} {last_loss:.4f} (random tokens; ln V = {math.log(VOCAB):.4f})")
    print(f"\nphase (median ms over {args.steps} steps)         ms   share")
    for name, key in (("zero_grad", "zero"), ("forward (model + cross_entropy)", "fwd"),
                      ("backward (autograd)", "bwd"), ("optimizer (clip_grad_norm_ + AdamW)", "opt"),
                      ("step (end to end)", "step")):
        print(f"  {name:<34} {med[key]:8.1f}  {100.0 * med[key] / step_ms:5.1f}%")
    print(f"  step min / max: {min(phases['step']):.1f} / {max(phases['step']):.1f} ms")
    best_ms = min(phases["step"])
    print(f"\ntokens/s {tokens_per_s:.1f} (best step {BATCH * SEQ / (best_ms / 1e3):.1f}) | ms/step {step_ms:.1f} | "
          f"MFU {100 * mfu:.1f}% | achieved {tokens_per_s * flops_per_token / 1e9:.1f} GFLOP/s | "
          f"peak RSS {peak_rss:.1f} MiB (current {current_rss_mib():.1f} MiB)", flush=True)

    if args.kernels:
        time_kernels(gen, med["fwd"], med["bwd"])

    print(f"RESULT impl=pytorch tokens_per_s={tokens_per_s:.1f} ms_per_step={step_ms:.2f} "
          f"best_ms_per_step={best_ms:.2f} "
          f"mfu={mfu:.4f} peak_rss_mib={peak_rss:.1f} sgemm_gflops={mm_peak / 1e9:.2f} ref_gflops={peak / 1e9:.2f} "
          f"zero_ms={med['zero']:.2f} fwd_ms={med['fwd']:.2f} bwd_ms={med['bwd']:.2f} opt_ms={med['opt']:.2f}")


if __name__ == "__main__":
    main()
