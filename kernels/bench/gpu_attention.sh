#!/usr/bin/env bash
# Softmax attention on the GPU machine, in one device call: the attention kernel tests
# (kernels/tests/attention_kernels.rs, the tensor-core kernels in bf16/f16 and the portable ones
# in f32 against the f64 reference), then `scalelab bench attention` and PyTorch's SDPA (flash,
# cuDNN and efficient backends) on the same shapes, merged into one table of time ratios.
# Stage here first: bash crates/train/bench/stage.sh && bash kernels/bench/stage_gemm.sh
# then, through the device tool, from the repository root:
#   run(command="bash kernels/bench/gpu_attention.sh", carry=[".gpu"])
# Environment: SHAPES (bench shapes, BxHxKVxTxD comma-separated), SECONDS_PER, TEST_TIMEOUT,
# BENCH_TIMEOUT, SKIP_TESTS=1, EXTRA, ATTENTION (SCALELAB_ATTENTION for the bench: flash by default,
# the kernels; reference for the tensor-op path).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
FINAL=${OUT:-/tmp/out}
mkdir -p "$FINAL"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$FINAL/gpu.txt"
gunzip -c .gpu/scalelab.gz > /tmp/scalelab && chmod +x /tmp/scalelab
if [ -z "${SKIP_TESTS:-}" ]; then
  gunzip -c .gpu/attention_kernels.gz > /tmp/attention_kernels && chmod +x /tmp/attention_kernels
  timeout "${TEST_TIMEOUT:-240}" /tmp/attention_kernels --test-threads 1 2>&1 | tee "$FINAL/attention-tests.log" \
    | grep -E "test |result|skipped|panicked|error"
fi
export SCALELAB_ATTENTION=${ATTENTION:-flash}
SHAPES=${SHAPES:-4x32x8x2048x128,4x32x32x2048x128,4x32x8x8192x128,4x32x32x8192x128,4x32x8x32768x128,4x32x32x32768x128}
: > "$FINAL/attention.jsonl"
timeout "${BENCH_TIMEOUT:-240}" /tmp/scalelab bench attention --shapes "$SHAPES" --seconds "${SECONDS_PER:-1}" \
  --json /tmp/ours.jsonl 2>&1 | tee "$FINAL/attention-ours.log"
sed 's/^{/{"path": "ours", /' /tmp/ours.jsonl >> "$FINAL/attention.jsonl"
timeout "${BENCH_TIMEOUT:-240}" python3 kernels/bench/attention_torch.py --shapes "$SHAPES" --seconds "${SECONDS_PER:-1}" \
  2>&1 | tee "$FINAL/attention-torch.log" | grep '^{' >> "$FINAL/attention.jsonl"
python3 - "$FINAL/attention.jsonl" <<'PY' | tee "$FINAL/attention.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t = {}
for r in rows:
    if "ms" in r:
        t.setdefault((r["shape"], r["pass"]), {})[r["path"]] = r
print("| shape BxHxKVxTxD | pass | ours ms | best SDPA ms (backend) | time ratio ours/SDPA | ours pool GiB | SDPA peak GiB |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (shape, p), v in t.items():
    sd = {k: r for k, r in v.items() if k.startswith("sdpa")}
    best = min(sd.items(), key=lambda kv: kv[1]["ms"]) if sd else None
    o = v.get("ours")
    ours = f"{o['ms']:.3f}" if o else "-"
    pool = f"{o['pool_gib']:.2f}" if o and o.get("pool_gib") is not None else "-"
    b = f"{best[1]['ms']:.3f} ({best[0][5:]})" if best else "-"
    ratio = f"{o['ms'] / best[1]['ms']:.2f}" if o and best else "-"
    peak = f"{best[1]['peak_gib']:.2f}" if best else "-"
    print(f"| {shape} | {p} | {ours} | {b} | {ratio} | {pool} | {peak} |")
PY
if [ -n "${EXTRA:-}" ]; then
  bash -c "$EXTRA" > "$FINAL/extra.log" 2>&1
  echo "== extra (rc $?)"; tail -20 "$FINAL/extra.log"
fi
