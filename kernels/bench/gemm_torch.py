# PyTorch's torch.matmul on the shapes of `scalelab bench gemm`: each shape's forward product
# (x W), input gradient (dy W^T) and weight gradient (x^T dy), TFLOP/s timed with CUDA events.
# Prints one JSON line per product: {"shape", "product", "path": "torch", "dtype", "tflops"}.
#   python3 gemm_torch.py [--shapes 8192x8192x8192,...] [--dtype bf16] [--seconds 0.5]
import argparse, json
import torch

p = argparse.ArgumentParser()
p.add_argument("--shapes", default="8192x8192x8192,32768x768x2304,32768x768x2048,32768x2048x768,32768x768x32000")
p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
p.add_argument("--seconds", type=float, default=0.5)
a = p.parse_args()
dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
torch.backends.cuda.matmul.allow_tf32 = True  # f32 as TF32, as scalelab's cuBLASLt path runs it


def tflops(lhs, rhs, flops):
    for _ in range(3):
        torch.matmul(lhs, rhs)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); torch.matmul(lhs, rhs); end.record(); torch.cuda.synchronize()
    reps = max(3, min(10000, int(a.seconds / max(start.elapsed_time(end) / 1e3, 1e-6))))
    start.record()
    for _ in range(reps):
        torch.matmul(lhs, rhs)
    end.record(); torch.cuda.synchronize()
    return reps * flops / (start.elapsed_time(end) / 1e3) / 1e12


for shape in a.shapes.split(","):
    m, k, n = (int(d) for d in shape.split("x"))
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(k, n, device="cuda", dtype=dtype)
    dy = torch.randn(m, n, device="cuda", dtype=dtype)
    for product, lhs, rhs in [("x W", x, w), ("dy W^T", dy, w.t()), ("x^T dy", x.t(), dy)]:
        print(json.dumps({"shape": shape, "product": product, "path": "torch", "dtype": a.dtype,
                          "tflops": tflops(lhs, rhs, 2.0 * m * k * n)}), flush=True)
    del x, w, dy
