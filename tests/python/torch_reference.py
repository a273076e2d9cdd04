# Independent PyTorch reference of castor's dense decoder-only models, written from the
# published architectures (not from castor's code), for test_parity.py:
#   gpt2:  token embedding + learned positions, pre-LayerNorm blocks (ln_1 -> causal
#          attention with a fused c_attn [q | k | v] -> c_proj; ln_2 -> c_fc -> GELU (tanh
#          approximation) -> c_proj), final ln_f, LM head tied to the token embedding;
#   llama: embed_tokens, RMSNorm (weight only), q/k/v projections with grouped-query heads,
#          RoPE in the Hugging Face rotate_half convention, o_proj, SwiGLU MLP
#          (down(silu(gate(x)) * up(x))), final norm, untied lm_head.
# Parameters are plain tensors in a dict keyed by Hugging Face names; weights of linear
# layers are stored (out, in) like nn.Linear. Loss: mean cross-entropy over targets != -1.
import math

import torch
import torch.nn.functional as F


class Config:
    def __init__(self, family, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, max_seq_len,
                 norm_eps, rope_theta):
        assert family in ("gpt2", "llama"), family
        assert d_model % n_heads == 0 and n_heads % n_kv_heads == 0
        self.family = family
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.d_ff = d_ff
        self.max_seq_len = max_seq_len
        self.norm_eps = norm_eps
        self.rope_theta = rope_theta

    @property
    def head_dim(self):
        return self.d_model // self.n_heads


def param_shapes(cfg):
    """Every parameter of the model: name -> shape (Hugging Face names)."""
    V, C, F_, D = cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.head_dim
    H, KVH = cfg.n_heads, cfg.n_kv_heads
    s = {}
    if cfg.family == "gpt2":
        s["transformer.wte.weight"] = (V, C)
        s["transformer.wpe.weight"] = (cfg.max_seq_len, C)
        for l in range(cfg.n_layers):
            p = f"transformer.h.{l}."
            s[p + "ln_1.weight"] = (C,)
            s[p + "ln_1.bias"] = (C,)
            s[p + "attn.c_attn.weight"] = ((H + 2 * KVH) * D, C)
            s[p + "attn.c_attn.bias"] = ((H + 2 * KVH) * D,)
            s[p + "attn.c_proj.weight"] = (C, H * D)
            s[p + "attn.c_proj.bias"] = (C,)
            s[p + "ln_2.weight"] = (C,)
            s[p + "ln_2.bias"] = (C,)
            s[p + "mlp.c_fc.weight"] = (F_, C)
            s[p + "mlp.c_fc.bias"] = (F_,)
            s[p + "mlp.c_proj.weight"] = (C, F_)
            s[p + "mlp.c_proj.bias"] = (C,)
        s["transformer.ln_f.weight"] = (C,)
        s["transformer.ln_f.bias"] = (C,)
    else:
        s["model.embed_tokens.weight"] = (V, C)
        for l in range(cfg.n_layers):
            p = f"model.layers.{l}."
            s[p + "input_layernorm.weight"] = (C,)
            s[p + "self_attn.q_proj.weight"] = (H * D, C)
            s[p + "self_attn.k_proj.weight"] = (KVH * D, C)
            s[p + "self_attn.v_proj.weight"] = (KVH * D, C)
            s[p + "self_attn.o_proj.weight"] = (C, H * D)
            s[p + "post_attention_layernorm.weight"] = (C,)
            s[p + "mlp.gate_proj.weight"] = (F_, C)
            s[p + "mlp.up_proj.weight"] = (F_, C)
            s[p + "mlp.down_proj.weight"] = (C, F_)
        s["model.norm.weight"] = (C,)
        s["lm_head.weight"] = (V, C)
    return s


def layer_norm(x, w, b, eps):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)  # biased, as in nn.LayerNorm
    return (x - mu) * torch.rsqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x * torch.sigmoid(x)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(T, D, theta, dtype):
    # Angle of pair (i, i + D/2) at position t: t * theta^(-2i/D), computed in float64.
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, D/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def causal_attention(q, k, v):
    """q: (B, H, T, D); k, v: (B, KVH, T, D). Query head h reads kv head h // (H / KVH)."""
    B, H, T, D = q.shape
    group = H // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)


def heads(x, n, D):
    B, T, _ = x.shape
    return x.view(B, T, n, D).transpose(1, 2)


def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def gpt2_logits(cfg, P, ids):
    B, T = ids.shape
    H, KVH, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    x = P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][:T].unsqueeze(0)
    for l in range(cfg.n_layers):
        p = f"transformer.h.{l}."
        h = layer_norm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"], cfg.norm_eps)
        qkv = F.linear(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])
        q, k, v = torch.split(qkv, [H * D, KVH * D, KVH * D], dim=-1)
        a = merge_heads(causal_attention(heads(q, H, D), heads(k, KVH, D), heads(v, KVH, D)))
        x = x + F.linear(a, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
        h = layer_norm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"], cfg.norm_eps)
        m = gelu_tanh(F.linear(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"]))
        x = x + F.linear(m, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
    x = layer_norm(x, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], cfg.norm_eps)
    return x @ P["transformer.wte.weight"].t()  # tied head


def llama_logits(cfg, P, ids):
    B, T = ids.shape
    H, KVH, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    cos, sin = rope_cos_sin(T, D, cfg.rope_theta, P["model.embed_tokens.weight"].dtype)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], cfg.norm_eps)
        q = heads(F.linear(h, P[p + "self_attn.q_proj.weight"]), H, D)
        k = heads(F.linear(h, P[p + "self_attn.k_proj.weight"]), KVH, D)
        v = heads(F.linear(h, P[p + "self_attn.v_proj.weight"]), KVH, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = merge_heads(causal_attention(q, k, v))
        x = x + F.linear(a, P[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        m = silu(F.linear(h, P[p + "mlp.gate_proj.weight"])) * F.linear(h, P[p + "mlp.up_proj.weight"])
        x = x + F.linear(m, P[p + "mlp.down_proj.weight"])
    x = rms_norm(x, P["model.norm.weight"], cfg.norm_eps)
    return F.linear(x, P["lm_head.weight"])


def logits(cfg, P, ids):
    return gpt2_logits(cfg, P, ids) if cfg.family == "gpt2" else llama_logits(cfg, P, ids)


def loss(cfg, P, ids, targets):
    """Mean cross-entropy over positions whose target is not -1."""
    z = logits(cfg, P, ids)
    return F.cross_entropy(z.reshape(-1, cfg.vocab_size), targets.reshape(-1), ignore_index=-1,
                           reduction="mean")


def learning_rate(lr, min_lr, warmup, step, total_steps):
    """Linear warmup to lr over `warmup` steps, then cosine to min_lr at total_steps (0-based step)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_by_global_norm(tensors, max_norm):
    """Global L2 norm over all gradients; if it exceeds max_norm, scale them by max_norm / norm
    (exactly, without torch's +1e-6). Returns the norm before clipping."""
    norm = math.sqrt(sum(float((t.grad.double() ** 2).sum()) for t in tensors))
    if max_norm > 0 and norm > max_norm:
        for t in tensors:
            t.grad.mul_(max_norm / norm)
    return norm


def train(cfg, P, ids, targets, steps, lr, min_lr, warmup, weight_decay, betas, eps, clip, decay_names):
    """`steps` AdamW steps on one batch; returns the loss before each step."""
    names = sorted(P)
    decay = [P[n] for n in names if n in decay_names]
    no_decay = [P[n] for n in names if n not in decay_names]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=betas, eps=eps)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=False)
        L = loss(cfg, P, ids, targets)
        L.backward()
        losses.append(float(L))
        clip_by_global_norm([P[n] for n in names], clip)
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, min_lr, warmup, step, steps)
        opt.step()
    return losses
