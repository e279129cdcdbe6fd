"""fla and PyTorch SDPA on the shapes of `kernels/benches/lightning.rs`, and the ratios.

Runs on the GPU machine, in the same device call as the Rust bench:

    python3 kernels/bench/compare_fla.py --scalelab results.jsonl [--quick] [--json out.jsonl]

fla: `chunk_simple_gla(q, k, v, g_gamma=-s, scale=1.0)` (MiniMax's decay), bf16, B=4, H=32,
D=128, layout [B, T, H, D]; decode: `fused_recurrent_simple_gla` with an fp32 state, H=64,
D=128. SDPA: causal, bf16, [B, H, T, D]. Times are medians of CUDA-event-timed runs
(triton.testing.do_bench). Prints one table, last, with scalelab / fla ratios (> 1: slower).
"""

import argparse
import json


def slopes(h):
    import torch

    return torch.tensor([2 ** (-8 * (i + 1) / h) for i in range(h)], device="cuda")


def bench(fn):
    import triton

    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalelab", help="JSON lines written by the Rust bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write fla/SDPA results here")
    ap.add_argument("--from-json", help="read fla/SDPA results from an earlier run instead")
    args = ap.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            rows = [tuple(json.loads(x)[k] for k in ("what", "t", "impl", "ms")) for x in f]
    else:
        rows = measure(args.quick)
    report(rows, args)


def measure(quick):
    # Imported here so that `--from-json` merges results on a machine without a GPU stack.
    import torch
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

    rows = []
    b, h, d = 4, 32, 128
    ts = [2048, 8192] if quick else [2048, 4096, 8192, 32768, 65536]
    g = -slopes(h)
    for t in ts:
        q, k, v = (torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16) * 0.3 for _ in range(3))
        fwd = lambda: chunk_simple_gla(q, k, v, g_gamma=g, scale=1.0)
        rows.append(("forward", t, "fla", bench(fwd)))
        print(rows[-1], flush=True)
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))

        def fb():
            o, _ = chunk_simple_gla(qg, kg, vg, g_gamma=g, scale=1.0)
            o.sum().backward()

        rows.append(("fwd+bwd", t, "fla", bench(fb)))
        print(rows[-1], flush=True)
        del qg, kg, vg
        if t <= 32768:
            qs, ks, vs = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            sd = lambda: torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
            rows.append(("forward", t, "sdpa", bench(sd)))
            qs, ks, vs = (x.requires_grad_() for x in (qs, ks, vs))

            def sdb():
                torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True).sum().backward()

            rows.append(("fwd+bwd", t, "sdpa", bench(sdb)))
        del q, k, v
        torch.cuda.empty_cache()

    h = 64
    g = -slopes(h)
    for batch in [1, 256]:
        q, k, v = (torch.randn(batch, 1, h, d, device="cuda", dtype=torch.float32) * 0.3 for _ in range(3))
        st = torch.randn(batch, h, d, d, device="cuda", dtype=torch.float32) * 0.3
        dec = lambda: fused_recurrent_simple_gla(
            q, k, v, g_gamma=g, scale=1.0, initial_state=st, output_final_state=True
        )
        rows.append((f"decode{batch}", 1, "fla", bench(dec)))
        print(rows[-1], flush=True)
    return rows


def report(rows, args):
    ours = {}
    if args.scalelab:
        with open(args.scalelab) as f:
            for line in f:
                r = json.loads(line)
                ours[(r["what"], r["t"], r["impl"])] = r["ms"]
    if args.json and not args.from_json:
        with open(args.json, "w") as f:
            for what, t, impl, ms in rows:
                f.write(json.dumps({"what": what, "t": t, "impl": impl, "ms": ms}) + "\n")

    print(f"{'what':<10} {'T':>6} {'fla ms':>9} {'sdpa ms':>9} {'ours ms':>9} {'ref ms':>9} {'ours/fla':>9}")
    keys = sorted({(w, t) for w, t, _, _ in rows}, key=lambda x: (x[0], x[1]))
    get = {(w, t, i): ms for w, t, i, ms in rows}
    for w, t in keys:
        fla = get.get((w, t, "fla"))
        sdpa = get.get((w, t, "sdpa"))
        k = ours.get((w, t, "kernel"))
        r = ours.get((w, t, "reference"))
        fmt = lambda x: f"{x:9.3f}" if x is not None else f"{'-':>9}"
        ratio = f"{k / fla:9.2f}" if (k and fla) else f"{'-':>9}"
        print(f"{w:<10} {t:>6} {fmt(fla)} {fmt(sdpa)} {fmt(k)} {fmt(r)} {ratio}")


if __name__ == "__main__":
    main()
