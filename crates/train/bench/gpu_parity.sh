#!/usr/bin/env bash
# Loss parity of bf16-mixed against f32 on the GPU machine: the same model, seed and batches for
# STEPS steps in each precision, then the final train and validation losses and their relative
# difference (issue 23 asks for under 1% at 200 steps of hybrid-125m). Needs /tmp/scalelab (as
# gpu_train_bench.sh unpacks it). Environment: MODEL (default configs/anchor/hybrid-125m.yaml),
# STEPS (200), BATCH (4), SEQ (512), TIMEOUT (seconds per run, 150), RES (where results go).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
BIN=/tmp/scalelab
RES=${RES:-/tmp/res}
mkdir -p "$RES/parity"
for p in bf16-mixed f32; do
  timeout "${TIMEOUT:-150}" "$BIN" train "${MODEL:-configs/anchor/hybrid-125m.yaml}" \
    --out "/tmp/parity-$p" --quiet --no-probes --precision "$p" --steps "${STEPS:-200}" \
    --batch-size "${BATCH:-4}" --seq-len "${SEQ:-512}" --seed 7 \
    --cache-dir /tmp/scalelab-cache > "$RES/parity/$p.log" 2>&1
  echo "$p: exit $?"
  cp "/tmp/parity-$p/summary.json" "$RES/parity/$p.summary.json" 2>/dev/null
  cp "/tmp/parity-$p/metrics.jsonl" "$RES/parity/$p.metrics.jsonl" 2>/dev/null
done
python3 - "$RES/parity" <<'PY'
import json, os, sys
d = sys.argv[1]
s = {}
for p in ("bf16-mixed", "f32"):
    f = os.path.join(d, f"{p}.summary.json")
    if os.path.exists(f):
        s[p] = json.load(open(f))
for p, v in s.items():
    print(f"{p:10s} steps={v['steps']} train_loss={v['train_loss']:.4f} val_loss={v['val_loss']:.4f} "
          f"tok/s={v['tokens_per_s']:.0f} kernels={v.get('lightning_kernels')}")
if len(s) == 2:
    a, b = s["bf16-mixed"], s["f32"]
    for k in ("train_loss", "val_loss"):
        print(f"{k}: bf16-mixed/f32 - 1 = {100 * (a[k] / b[k] - 1):+.2f}%")
PY
