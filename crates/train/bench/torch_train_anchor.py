# Training-throughput anchor: a PyTorch (eager, bf16 autocast) hybrid lightning/softmax decoder with
# optional MoE, lightning core from fla's chunk_simple_gla (MiniMax decay), softmax from SDPA.
# Prints tokens/s and model FLOPs utilisation for a few configs. Public APIs only.
# A copy of shared/bench/torch_train_anchor.py with two filters, ANCHOR_T (e.g. "2048", default
# both lengths) and ANCHOR_MODELS (comma-separated names of CFGS, default all), and the peak
# memory PyTorch's allocator reserved per model (peak_reserved_gib), to set beside scalelab's.
import math, os, sys, time, json
import torch, torch.nn as nn, torch.nn.functional as F
from fla.ops.simple_gla import chunk_simple_gla

dev = "cuda"
torch.backends.cuda.matmul.allow_tf32 = True
PEAK = float(os.environ.get("PEAK_TFLOPS", "989")) * 1e12

def slopes(H):
    return torch.tensor([2 ** (-8 * (h + 1) / H) for h in range(H)])

class RMS(nn.Module):
    def __init__(s, d): super().__init__(); s.w = nn.Parameter(torch.ones(d))
    def forward(s, x): return F.rms_norm(x, (x.shape[-1],), s.w, 1e-5)

class Lightning(nn.Module):
    def __init__(s, d, H, l, L):
        super().__init__(); s.H = H; s.hd = d // H
        s.qkv = nn.Linear(d, 3 * d, bias=False); s.g = nn.Linear(d, d, bias=False); s.o = nn.Linear(d, d, bias=False)
        s.n = RMS(d)
        s.register_buffer("gam", -(slopes(H) * (1 - l / max(L - 1, 1) + 1e-5)))
    def forward(s, x):
        B, T, D = x.shape
        q, k, v = F.silu(s.qkv(x)).view(B, T, 3, s.H, s.hd).unbind(2)
        o, _ = chunk_simple_gla(q, k, v, g_gamma=s.gam, scale=1.0)
        o = s.n(o.reshape(B, T, D))
        return s.o(torch.sigmoid(s.g(x)) * o)

class Softmax(nn.Module):
    def __init__(s, d, H, kvh):
        super().__init__(); s.H = H; s.kvh = kvh; s.hd = d // H
        s.q = nn.Linear(d, d, bias=False); s.kv = nn.Linear(d, 2 * kvh * s.hd, bias=False); s.o = nn.Linear(d, d, bias=False)
    def forward(s, x):
        B, T, D = x.shape
        q = s.q(x).view(B, T, s.H, s.hd).transpose(1, 2)
        k, v = s.kv(x).view(B, T, 2, s.kvh, s.hd).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return s.o(o.transpose(1, 2).reshape(B, T, D))

class SwiGLU(nn.Module):
    def __init__(s, d, f): super().__init__(); s.w13 = nn.Linear(d, 2 * f, bias=False); s.w2 = nn.Linear(f, d, bias=False)
    def forward(s, x): a, b = s.w13(x).chunk(2, -1); return s.w2(F.silu(a) * b)

class MoE(nn.Module):
    def __init__(s, d, f, E, k):
        super().__init__(); s.E = E; s.k = k; s.r = nn.Linear(d, E, bias=False)
        s.ex = nn.ModuleList([SwiGLU(d, f) for _ in range(E)])
    def forward(s, x):
        B, T, D = x.shape; x2 = x.reshape(-1, D)
        p = s.r(x2).float().softmax(-1); w, i = p.topk(s.k, -1); w = (w / w.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x2)
        flat = i.reshape(-1); order = flat.argsort(); counts = torch.bincount(flat, minlength=s.E).tolist()
        tok = order // s.k; start = 0
        for e, c in enumerate(counts):
            if c == 0: continue
            idx = tok[start:start + c]; ww = w.reshape(-1)[order[start:start + c]]
            out.index_add_(0, idx, s.ex[e](x2[idx]) * ww[:, None]); start += c
        aux = s.E * (F.one_hot(i[:, 0], s.E).float().mean(0) * p.mean(0)).sum()
        return out.view(B, T, D), aux

class Block(nn.Module):
    def __init__(s, cfg, l):
        super().__init__(); d = cfg["d"]; L = cfg["L"]
        kind = cfg["pattern"][l % len(cfg["pattern"])]
        s.att = Lightning(d, cfg["H"], l, L) if kind == "L" else Softmax(d, cfg["H"], cfg["kvh"])
        s.moe = cfg.get("E", 0) > 0
        s.ffn = MoE(d, cfg["f"], cfg["E"], cfg["k"]) if s.moe else SwiGLU(d, cfg["f"])
        s.n1 = RMS(d); s.n2 = RMS(d)
    def forward(s, x):
        x = x + s.att(s.n1(x))
        if s.moe:
            y, aux = s.ffn(s.n2(x)); return x + y, aux
        return x + s.ffn(s.n2(x)), x.new_zeros(())

class Model(nn.Module):
    def __init__(s, cfg):
        super().__init__(); s.emb = nn.Embedding(cfg["V"], cfg["d"]); s.blocks = nn.ModuleList([Block(cfg, l) for l in range(cfg["L"])])
        s.n = RMS(cfg["d"]); s.head = nn.Linear(cfg["d"], cfg["V"], bias=False)
    def forward(s, t):
        x = s.emb(t); aux = 0
        for b in s.blocks: x, a = b(x); aux = aux + a
        return F.cross_entropy(s.head(s.n(x)).float().view(-1, s.head.out_features), t.view(-1)) + 0.01 * aux

def flops_per_token(cfg, T):
    # matmul FLOPs, training = 3x forward; attention cores counted (softmax causal: 2*2*T*d/2 per layer)
    d, f, V, L = cfg["d"], cfg["f"], cfg["V"], cfg["L"]
    fw = 2 * d * V
    for l in range(L):
        kind = cfg["pattern"][l % len(cfg["pattern"])]
        if kind == "L":
            fw += 2 * d * 5 * d + 2 * 2 * d * (d // cfg["H"]) * 2 + 2 * 64 * d  # qkv,g,o + state terms + intra (block 64)
        else:
            hd = d // cfg["H"]; fw += 2 * d * (2 * d + 2 * cfg["kvh"] * hd) + 2 * T * d
        act = cfg["k"] if cfg.get("E", 0) > 0 else 1
        fw += act * 2 * 3 * d * f + (2 * d * cfg["E"] if cfg.get("E", 0) else 0)
    return 3 * fw

CFGS = {
  "hybrid-125M-dense": dict(d=768, L=12, H=12, kvh=4, f=2048, V=32000, pattern="LLLS"),
  "hybrid-125M-moe8x2": dict(d=768, L=12, H=12, kvh=4, f=1024, V=32000, pattern="LLLS", E=8, k=2),
  "softmax-125M-dense": dict(d=768, L=12, H=12, kvh=4, f=2048, V=32000, pattern="S"),
  "lightning-125M-dense": dict(d=768, L=12, H=12, kvh=4, f=2048, V=32000, pattern="L"),
}
res = {}
only_t = {int(x) for x in os.environ.get("ANCHOR_T", "2048,8192").split(",")}
only_m = set(os.environ.get("ANCHOR_MODELS", ",".join(CFGS)).split(","))
for T, B in ((2048, 16), (8192, 4)):
    if T not in only_t: continue
    for name, cfg in CFGS.items():
        if name not in only_m: continue
        torch.manual_seed(0); torch.cuda.reset_peak_memory_stats()
        m = Model(cfg).to(dev); opt = torch.optim.AdamW(m.parameters(), lr=3e-4, fused=True)
        n = sum(p.numel() for p in m.parameters())
        t = torch.randint(0, cfg["V"], (B, T), device=dev)
        def step():
            with torch.autocast("cuda", torch.bfloat16):
                loss = m(t)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); return loss
        for _ in range(3): step()
        torch.cuda.synchronize(); t0 = time.time(); N = 10
        for _ in range(N): l = step()
        torch.cuda.synchronize(); dt = (time.time() - t0) / N
        tps = B * T / dt; mfu = tps * flops_per_token(cfg, T) / PEAK
        peak = torch.cuda.max_memory_reserved() / 2**30
        res[f"{name}@{T}"] = dict(params=n, tokens_per_s=round(tps), mfu=round(mfu, 3), loss=float(l),
                                  peak_reserved_gib=round(peak, 1))
        print(f"{name:24s} T={T:5d} B={B:2d} params={n/1e6:6.1f}M tok/s={tps:9.0f} MFU={mfu*100:5.1f}% "
              f"peak={peak:.1f}GiB", flush=True)
        del m, opt; torch.cuda.empty_cache()
out = os.environ.get("OUT")
if out: json.dump(res, open(os.path.join(out, "torch_train_anchor.json"), "w"), indent=1)
