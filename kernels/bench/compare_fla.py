"""fla and PyTorch SDPA on the shapes of `kernels/benches/lightning.rs`, and the ratios.

Runs on the GPU machine, in the same device call as the Rust bench:

    python3 kernels/bench/compare_fla.py --scalelab results.jsonl [--quick] [--json out.jsonl]

fla: `chunk_simple_gla(q, k, v, g_gamma=-s, scale=1.0)` (MiniMax's decay), bf16, B=4, H=32,
D=128, layout [B, T, H, D]; decode: `fused_recurrent_simple_gla` with an fp32 state, H=64,
D=128. SDPA: causal, bf16, [B, H, T, D]. Times are medians of CUDA-event-timed runs
(triton.testing.do_bench). Also the device's two ceilings, measured the same way: a 4 GiB
device-to-device copy (bytes read plus written) and an 8192^3 bf16 matrix product on random data.

Prints one table, last, with scalelab / fla ratios (> 1: slower) and each of our times over the
memory floor of our one-launch kernels: the bytes they must move through DRAM (each input read
once, each output written once; `floor_bytes`) over the measured copy rate.
"""

import argparse
import json


def slopes(h):
    import torch

    return torch.tensor([2 ** (-8 * (i + 1) / h) for i in range(h)], device="cuda")


def bench(fn):
    import triton

    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


B, H, D, CHUNK = 4, 32, 128, 64


def floor_bytes(what, t):
    """DRAM bytes the one-launch kernels move at least, bf16, B=4, H=32, D=128.

    X is one [B, H, T, D] tensor. Each scan keeps its state on chip, so it reads its three inputs
    once and writes its output once: the forward 4 X; forward+backward adds the dq, dk and dv
    scans, 16 X. (The split pair also writes and reads every chunk's state, 2 X per scan at
    D=128 and 64-token chunks: 10 X forward. fla moves about 10 X forward and 19 X backward.)
    """
    scan = 4 * B * H * t * D * 2
    return {"forward": scan, "fwd+bwd": 4 * scan}.get(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalelab", help="JSON lines written by the Rust bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ts", help="sequence lengths, comma-separated (default 2048 to 65536)")
    ap.add_argument("--json", help="write fla/SDPA results here")
    ap.add_argument("--from-json", help="read fla/SDPA results from an earlier run instead")
    ap.add_argument(
        "--copy-tbps",
        type=float,
        help="the copy rate (TB/s, read plus write) for the floor, where the results have none",
    )
    args = ap.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            rows = [tuple(json.loads(x)[k] for k in ("what", "t", "impl", "ms")) for x in f]
    else:
        ts = [int(t) for t in args.ts.split(",")] if args.ts else None
        rows = measure(args.quick, ts)
    if args.copy_tbps:
        rows = [r for r in rows if r[0] != "copy"] + [("copy", 1e12, "given", 1e3 / args.copy_tbps)]
    report(rows, args)


def measure(quick, ts=None):
    # Imported here so that `--from-json` merges results on a machine without a GPU stack.
    import torch
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

    rows = ceilings()
    b, h, d = B, H, D
    ts = ts or ([2048, 8192] if quick else [2048, 4096, 8192, 32768, 65536])
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


def ceilings():
    """The device's copy rate and bf16 matrix rate, as rows `(what, amount, "torch", ms)`."""
    import torch

    n = 1 << 31
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    rows = [("copy", 2 * 2 * n, "torch", bench(lambda: dst.copy_(src)))]
    del src, dst
    m = 8192
    a, b = (torch.randn(m, m, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    rows.append(("matmul", 2 * m**3, "torch", bench(lambda: a @ b)))
    torch.cuda.empty_cache()
    return rows


def report(rows, args):
    ours = {}
    ours_copy_gbs = None
    if args.scalelab:
        with open(args.scalelab) as f:
            for line in f:
                r = json.loads(line)
                ours[(r["what"], r["t"], r["impl"])] = r["ms"]
                if r["what"] == "copy":
                    ours_copy_gbs = r["gbs"]
    if args.json and not args.from_json:
        with open(args.json, "w") as f:
            for what, t, impl, ms in rows:
                f.write(json.dumps({"what": what, "t": t, "impl": impl, "ms": ms}) + "\n")

    get = {(w, t, i): ms for w, t, i, ms in rows}
    copy = [(t, ms) for w, t, _, ms in rows if w == "copy"]
    bw = copy[0][0] / (copy[0][1] * 1e-3) if copy else None
    for w, t, _, ms in rows:
        if w in ("copy", "matmul"):
            unit = "TB/s" if w == "copy" else "TFLOP/s"
            print(f"ceiling {w}: {t / ms / 1e9:.2f} {unit}")
    if ours_copy_gbs:
        # The bench's own element-wise pass (read and write) on CubeCL's buffers.
        print(f"ceiling copy through CubeCL: {ours_copy_gbs / 1e3:.2f} TB/s")

    print(
        f"{'what':<10} {'T':>6} {'fla ms':>9} {'sdpa ms':>9} {'ours ms':>9} {'ref ms':>9} {'ours/fla':>9}"
        f" {'floor ms':>9} {'ours/floor':>10} {'fla/floor':>9}"
    )
    keys = sorted({(w, t) for w, t, _, _ in rows if w not in ("copy", "matmul")}, key=lambda x: (x[0], x[1]))
    for w, t in keys:
        fla = get.get((w, t, "fla"))
        sdpa = get.get((w, t, "sdpa"))
        k = ours.get((w, t, "kernel"))
        r = ours.get((w, t, "reference"))
        fmt = lambda x: f"{x:9.3f}" if x is not None else f"{'-':>9}"
        ratio = f"{k / fla:9.2f}" if (k and fla) else f"{'-':>9}"
        fb = floor_bytes(w, t)
        floor = fb / bw * 1e3 if (fb and bw) else None
        over = lambda x, width: f"{x / floor:{width}.2f}" if (x and floor) else f"{'-':>{width}}"
        print(
            f"{w:<10} {t:>6} {fmt(fla)} {fmt(sdpa)} {fmt(k)} {fmt(r)} {ratio}"
            f" {fmt(floor)} {over(k, 10)} {over(fla, 9)}"
        )


if __name__ == "__main__":
    main()
