#!/usr/bin/env bash
# The matrix products on the GPU machine, in one device call: the CUDA GEMM tests
# (kernels/tests/cuda_gemm.rs: cuBLASLt against Burn's matmul, outputs and gradients), then
# `scalelab bench gemm` and PyTorch's torch.matmul on the same shapes, merged into one table.
# Stage here first (the release cuda binary, the test binary):
#   bash crates/train/bench/stage.sh && bash kernels/bench/stage_gemm.sh
# then, through the device tool, from the repository root:
#   run(command="bash kernels/bench/gpu_gemm.sh", carry=[".gpu"])
# Environment: DTYPES (default "bf16 f32"), SKIP_TESTS=1, EXTRA (a command run last).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
FINAL=${OUT:-/tmp/out}
mkdir -p "$FINAL"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$FINAL/gpu.txt"
gunzip -c .gpu/scalelab.gz > /tmp/scalelab && chmod +x /tmp/scalelab
if [ -z "${SKIP_TESTS:-}" ]; then
  gunzip -c .gpu/cuda_gemm.gz > /tmp/cuda_gemm && chmod +x /tmp/cuda_gemm
  timeout 420 /tmp/cuda_gemm --test-threads 1 2>&1 | tee "$FINAL/cuda-gemm-tests.log" | grep -E "test |result|skipped|panicked"
fi
: > "$FINAL/gemm.jsonl"
for dt in ${DTYPES:-bf16 f32}; do
  timeout 150 /tmp/scalelab bench gemm --dtype "$dt" --json /tmp/ours.jsonl 2>&1 | tee -a "$FINAL/gemm-ours.log"
  cat /tmp/ours.jsonl >> "$FINAL/gemm.jsonl"
  timeout 90 python3 kernels/bench/gemm_torch.py --dtype "$dt" 2>&1 | tee -a "$FINAL/gemm-torch.log" \
    | grep '^{' >> "$FINAL/gemm.jsonl"
done
python3 - "$FINAL/gemm.jsonl" <<'PY' | tee "$FINAL/gemm.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t = {}
for r in rows:
    t.setdefault((r["dtype"], r["shape"], r["product"]), {})[r["path"]] = r["tflops"]
print("| dtype | shape MxKxN | product | cuBLASLt (ours) | Burn matmul | torch.matmul | ours / torch |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (dt, s, p), v in t.items():
    f = lambda k: f"{v[k]:.0f}" if k in v else "-"
    ratio = f"{v['auto'] / v['torch']:.2f}" if "auto" in v and "torch" in v else "-"
    print(f"| {dt} | {s} | {p} | {f('auto')} | {f('burn')} | {f('torch')} | {ratio} |")
PY
if [ -n "${EXTRA:-}" ]; then
  bash -c "$EXTRA" > "$FINAL/extra.log" 2>&1
  echo "== extra (rc $?)"; tail -20 "$FINAL/extra.log"
fi
