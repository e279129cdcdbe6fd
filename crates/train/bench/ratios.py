"""The ratio table of one GPU call: scalelab's `bench train` JSON against the PyTorch anchor's,
measured in the same call on the same card. Usage: python3 ratios.py OUT_DIR"""
import json
import os
import sys

out = sys.argv[1]
ANCHOR = {  # scalelab model name -> anchor config name
    "hybrid-125m": "hybrid-125M-dense",
    "lightning-125m": "lightning-125M-dense",
    "softmax-125m": "softmax-125M-dense",
    "hybrid-125m-moe8": "hybrid-125M-moe8x2",
}


def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except OSError:
        return None


anchor = load("torch_train_anchor.json") or {}
ours = load("scalelab_bench.json") or []
warm = {r["model"]: r for r in (load("scalelab_bench_warm.json") or [])}
gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "?"
print(f"card: {gpu}\n")
print("| model | precision | batch | scalelab tok/s | PyTorch tok/s | ratio | MFU % | peak GiB (PyTorch) | first step cold / warm (s) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in ours:
    seq = int(r["batch"].split("x")[1])
    base = anchor.get(f"{ANCHOR.get(r['model'].removeprefix('anchor-'), '?')}@{seq}", {})
    a = base.get("tokens_per_s")
    tps = r.get("tokens_per_s")
    ratio = f"{tps / a:.3f}" if tps and a else "-"
    f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"
    w = warm.get(r["model"], {}).get("first_step_s")
    err = f" ({r['error']})" if r.get("error") else ""
    print(f"| {r['model']} | {r['precision']} | {r['batch']} | {f(tps, 0)}{err} | {f(a, 0)} | {ratio} | "
          f"{f(r['mfu'] * 100 if r.get('mfu') else None)} | {f(r.get('peak_memory_gib'))} ({f(base.get('peak_reserved_gib'))}) | "
          f"{f(r.get('first_step_s'))} / {f(w)} |")
