#!/usr/bin/env bash
# Training throughput on the GPU machine, in one device call: scalelab's trainer on the tiny model
# and on the ~125M models of shared/bench/torch_train_anchor.py, then the PyTorch anchor itself.
# Expects, in the repository root: .gpu/scalelab (a `--features cuda` release build), .whl/
# (fla-core and flash-linear-attention 0.6.0 and einops wheels) and .gpu/torch_train_anchor.py
# (a copy of ../shared/bench/torch_train_anchor.py).
# Writes logs and a JSON table under $OUT. Usage: bash crates/train/bench/gpu_throughput.sh [quick]
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${BIN:-.gpu/scalelab}
PEAK=989e12
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# CubeCL reads cubecl.toml from the working directory: AUTOTUNE=minimal shortens the first steps.
[ -n "${AUTOTUNE:-}" ] && printf '[autotune]\nlevel = "%s"\n' "$AUTOTUNE" > cubecl.toml

run() { # name config precision steps batch seq
  local name=$1 cfg=$2 prec=$3 steps=$4 batch=$5 seq=$6
  local dir=/tmp/runs/$name
  rm -rf "$dir"
  local t0=$(date +%s)
  timeout ${RUN_TIMEOUT:-150} "$BIN" train "$cfg" --out "$dir" --quiet --no-probes --precision "$prec" \
    --steps "$steps" --batch-size "$batch" --seq-len "$seq" --peak-flops $PEAK > "$OUT/$name.log" 2>&1
  local rc=$?
  python3 - "$dir" "$name" "$prec" "$batch" "$seq" "$rc" "$(( $(date +%s) - t0 ))" <<'PY' | tee -a "$OUT/train.jsonl"
import json, sys
d, name, prec, b, t, rc, wall = sys.argv[1:]
try:
    rows = [json.loads(l) for l in open(d + "/metrics.jsonl")]
except OSError:
    rows = []
last = rows[-1] if rows else {}
print(json.dumps(dict(name=name, precision=prec, batch=int(b), seq=int(t), rc=int(rc), wall_s=int(wall),
  tokens_per_s=last.get("perf/tokens_per_s"), mfu=last.get("perf/mfu"), loss=last.get("train/loss"),
  val_loss=last.get("val/loss"), first_loss=rows[0].get("train/loss") if rows else None)))
PY
}

if [ -z "${SKIP_ANCHOR:-}" ]; then
# The PyTorch anchor first (fla's chunk_simple_gla + SDPA), same card, same call.
(python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  && PYTHONPATH=/tmp/site OUT="$OUT" timeout ${ANCHOR_TIMEOUT:-200} python3 ${ANCHOR:-.gpu/torch_train_anchor.py}) \
  > "$OUT/torch_anchor.log" 2>&1
tail -8 "$OUT/torch_anchor.log"
fi

run tiny-dense-f32 configs/tiny/tiny-hybrid.yaml f32 40 16 128
# B=16 x 2048 runs out of memory in Burn 0.21 (a 21 GB buffer, results/h100-hybrid125m-b16-oom.log).
run hybrid125m-f32-B4-T2048 configs/anchor/hybrid-125m.yaml f32 20 4 2048
if [ "${1:-}" != quick ]; then
  run tiny-moe-f32 configs/tiny/tiny-hybrid-moe.yaml f32 40 16 128
  run hybrid125m-bf16-T2048 configs/anchor/hybrid-125m.yaml bf16 20 16 2048
  run softmax125m-f32-T2048 configs/anchor/softmax-125m.yaml f32 30 16 2048
  run lightning125m-f32-T2048 configs/anchor/lightning-125m.yaml f32 30 16 2048
  run hybridmoe125m-f32-T2048 configs/anchor/hybrid-125m-moe8.yaml f32 30 16 2048
fi
echo "=== scalelab"
cat "$OUT/train.jsonl"
