# PyTorch's scaled_dot_product_attention (causal, GQA through enable_gqa) on the shapes of
# `scalelab bench attention`: forward and forward+backward, timed with CUDA events, on each SDPA
# backend that runs (flash, cuDNN, efficient), and the peak memory PyTorch allocated.
# Prints one JSON line per shape, pass and backend:
#   {"shape", "pass", "path": "sdpa-<backend>", "dtype", "ms", "tflops", "peak_gib"}
#   python3 attention_torch.py [--shapes 4x32x8x2048x128,...] [--dtype bf16] [--seconds 1]
import argparse, json
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

p = argparse.ArgumentParser()
p.add_argument("--shapes", default="4x32x8x2048x128,4x32x32x2048x128,4x32x8x8192x128,"
               "4x32x32x8192x128,4x32x8x32768x128,4x32x32x32768x128")
p.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
p.add_argument("--seconds", type=float, default=1.0)
a = p.parse_args()
dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def per_call(step):
    for _ in range(2):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); step(); end.record(); torch.cuda.synchronize()
    reps = max(2, min(1000, int(a.seconds / max(start.elapsed_time(end) / 1e3, 1e-6))))
    start.record()
    for _ in range(reps):
        step()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


for shape in a.shapes.split(","):
    b, h, kv, t, d = (int(x) for x in shape.split("x"))
    fwd_flops = 2.0 * b * h * t * t * d
    for name, backend in BACKENDS.items():
        q = torch.randn(b, h, t, d, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(b, kv, t, d, device="cuda", dtype=dtype, requires_grad=True)
        v = torch.randn(b, kv, t, d, device="cuda", dtype=dtype, requires_grad=True)
        do = torch.randn(b, h, t, d, device="cuda", dtype=dtype)
        gqa = kv != h

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

        def fwd_bwd():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            o.backward(do)

        for pass_, step, flops in [("fwd", fwd, fwd_flops), ("fwd+bwd", fwd_bwd, 2.5 * fwd_flops)]:
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            try:
                with sdpa_kernel([backend]):
                    ms = per_call(step)
            except Exception as e:  # a backend that does not take this shape
                print(json.dumps({"shape": shape, "pass": pass_, "path": f"sdpa-{name}",
                                  "dtype": a.dtype, "error": str(e).splitlines()[0][:120]}), flush=True)
                continue
            print(json.dumps({"shape": shape, "pass": pass_, "path": f"sdpa-{name}", "dtype": a.dtype,
                              "ms": ms, "tflops": flops / (ms / 1e3) / 1e12,
                              "peak_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)
        del q, k, v, do
