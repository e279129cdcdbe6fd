"""Why `ds` needs f32 scans under bf16 inputs: a NumPy model of the chunked scans at T=2048.

`ds_h = -sum_t (t+1) (q_t . dq_t - k_t . dk_t)` is exact for exact `dq`, `dk`. This computes it
from `dq`, `dk` rounded three ways and prints each one's relative error against the exact
`-sum_{j<=t} (t-j) lambda^(t-j) (q_t . k_j) (v_j . do_t)`, per decay rate:
  out_bf16       exact scans, outputs rounded to bf16;
  chunk_f32out   64-token chunks whose scores and states are rounded to bf16 (as the tensor-core
                 kernels take them), outputs kept in f32;
  chunk_bf16out  the same with the outputs rounded too (what the bf16 kernels return).
Run: python3 kernels/bench/ds_rounding.py  (NumPy only; seconds).
"""
import numpy as np

T, D, C = 2048, 128, 64
rng = np.random.default_rng(0)


def bf16(x):
    """Round to the nearest bf16 (ties to even), returned as float64."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


def identity(q, k, dq, dk):
    pos = np.arange(1, T + 1)[:, None]
    return -((pos * (q * dq)).sum() - (pos * (k * dk)).sum())


def chunked(lam, q, k, v, do, L, B, round_out):
    """dq (forward over chunks) and dk (reverse), scores and states rounded to bf16."""
    dq, dk = np.zeros((T, D)), np.zeros((T, D))
    loc = np.arange(C)
    state = np.zeros((D, D))  # sum_{j<b} lambda^(b-1-j) v_j^T k_j
    for c0 in range(0, T, C):
        sl = slice(c0, c0 + C)
        p = bf16(L[sl, sl] * B[sl, sl])
        dq[sl] = p @ k[sl] + (lam ** (loc + 1))[:, None] * (do[sl] @ bf16(state))
        state = lam**C * state + (lam ** (C - 1 - loc)[:, None] * v[sl]).T @ k[sl]
    state = np.zeros((D, D))  # sum_{t>=e} lambda^(t-e) do_t^T q_t
    for c0 in reversed(range(0, T, C)):
        sl = slice(c0, c0 + C)
        p = bf16(L[sl, sl] * B[sl, sl])
        dk[sl] = p.T @ q[sl] + (lam ** (C - loc))[:, None] * (v[sl] @ bf16(state))
        state = lam**C * state + (lam ** loc[:, None] * do[sl]).T @ q[sl]
    return (bf16(dq), bf16(dk)) if round_out else (dq, dk)


for s in [0.01, 0.1, 0.5, 1.6, 3.2]:
    lam = np.exp(-s)
    q, k, v, do = (bf16(rng.normal(0, 1, (T, D))) for _ in range(4))
    t = np.arange(T)
    dist = t[:, None] - t[None, :]
    L = np.where(dist >= 0, lam ** np.maximum(dist, 0), 0.0)
    A, B = q @ k.T, do @ v.T
    exact = -(dist * L * A * B).sum()
    dq, dk = (L * B) @ k, (L * B).T @ q
    errs = {
        "out_bf16": identity(q, k, bf16(dq), bf16(dk)),
        "chunk_f32out": identity(q, k, *chunked(lam, q, k, v, do, L, B, False)),
        "chunk_bf16out": identity(q, k, *chunked(lam, q, k, v, do, L, B, True)),
    }
    print(f"s={s}: ds {exact:.4e}; relative error: "
          + ", ".join(f"{n} {abs(x - exact) / abs(exact):.1e}" for n, x in errs.items()))
