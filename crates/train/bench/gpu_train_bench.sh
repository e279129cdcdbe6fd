#!/usr/bin/env bash
# Training throughput on the GPU machine, in one device call: the PyTorch anchor
# (torch_train_anchor.py, fla + SDPA, bf16 autocast) and `scalelab bench train` on the same card,
# then the ratios. Stage first, here: `bash crates/train/bench/stage.sh` (the cuda binary, fla's
# wheels). Through the device tool, from the repository root:
#   run(command="bash crates/train/bench/gpu_train_bench.sh", carry=[".gpu", ".whl"])
# Environment (all optional):
#   MODELS     configs for scalelab (default: the four anchors)
#   ANCHOR_MODELS, ANCHOR_T   filters of the anchor (default: its four models at T=2048)
#   PRECISION  scalelab's precision (default bf16-mixed); STEPS, WARMUP, LOG_EVERY, BATCH, SEQ
#   TIMEOUT    seconds per scalelab model (default 240); WARM=1 runs the first model again warm
#   SKIP_ANCHOR=1, SKIP_OURS=1
#   EXTRA      a command run last (its output in extra.log), e.g. gpu_parity.sh
#   DEADLINE   seconds from the start by which every stage is cut (default 560), so that the
#              results are packed inside the device tool's ten-minute limit
#   CACHE_BACK=1  also sends CubeCL's kernel and autotune cache back, in 15 MiB pieces
#              ($OUT/cubecl-cache.tgz.part-*); copied into .gpu/ and carried, the next call starts
#              from it instead of compiling and autotuning every kernel again (minutes per model)
# Everything lands in /tmp/res and comes back as $OUT/results.tgz, with ratios.md beside it.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
FINAL=${OUT:-/tmp/out}
OUT=/tmp/res
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL"
# Seconds left before DEADLINE, capped by $1 when given (at least 5).
left() {
  local l=$(( ${DEADLINE:-560} - SECONDS ))
  [ -n "${1:-}" ] && [ "$1" -lt "$l" ] && l=$1
  [ "$l" -lt 5 ] && l=5
  echo "$l"
}
BIN=/tmp/scalelab
gunzip -c .gpu/scalelab.gz > "$BIN" && chmod +x "$BIN"
if ls .gpu/cubecl-cache.tgz.part-* >/dev/null 2>&1; then
  cat .gpu/cubecl-cache.tgz.part-* | tar xzf - -C /tmp && echo "kernel cache restored: $(du -sh /tmp/scalelab-cache | cut -f1)"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"

if [ -z "${SKIP_ANCHOR:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && PYTHONPATH=/tmp/site OUT="$OUT" ANCHOR_T=${ANCHOR_T:-2048} \
       ANCHOR_MODELS=${ANCHOR_MODELS:-hybrid-125M-dense,lightning-125M-dense,softmax-125M-dense,hybrid-125M-moe8x2} \
       timeout "$(left "${ANCHOR_TIMEOUT:-200}")" python3 crates/train/bench/torch_train_anchor.py 2>&1 \
       | tee "$OUT/torch_anchor.log" | grep -v Warning
fi

if [ -z "${SKIP_OURS:-}" ]; then
  # shellcheck disable=SC2086
  timeout "$(left)" "$BIN" bench train ${MODELS:-} --precision "${PRECISION:-bf16-mixed}" \
    --steps "${STEPS:-30}" --warmup "${WARMUP:-10}" --log-every "${LOG_EVERY:-5}" \
    --batch-size "${BATCH:-16}" --seq-len "${SEQ:-2048}" --timeout "${TIMEOUT:-240}" \
    --out /tmp/bench --cache-dir /tmp/scalelab-cache --json "$OUT/scalelab_bench.json" \
    2>&1 | tee "$OUT/scalelab_bench.txt"
  if [ -n "${WARM:-}" ]; then
    first=$(echo ${MODELS:-configs/anchor/hybrid-125m.yaml} | awk '{print $1}')
    timeout "$(left)" "$BIN" bench train "$first" --precision "${PRECISION:-bf16-mixed}" \
      --steps "${STEPS:-30}" --warmup "${WARMUP:-10}" --log-every "${LOG_EVERY:-5}" \
      --batch-size "${BATCH:-16}" --seq-len "${SEQ:-2048}" --timeout "${TIMEOUT:-240}" \
      --out /tmp/bench-warm --cache-dir /tmp/scalelab-cache --json "$OUT/scalelab_bench_warm.json" \
      2>&1 | tee "$OUT/scalelab_bench_warm.txt"
  fi
  for f in /tmp/bench/*.log; do echo "== $f"; tail -4 "$f"; done
  mkdir -p "$OUT/runs"
  for d in /tmp/bench/* /tmp/bench-warm/*; do
    [ -d "$d" ] || continue
    n=$(basename "$(dirname "$d")")-$(basename "$d")
    mkdir -p "$OUT/runs/$n"
    cp "$d"/summary.json "$d"/metrics.jsonl "$OUT/runs/$n/" 2>/dev/null
  done
  cp /tmp/bench/*.log "$OUT/runs/" 2>/dev/null
fi
if [ -n "${EXTRA:-}" ]; then
  timeout "$(left)" bash -c "$EXTRA" > "$OUT/extra.log" 2>&1
  echo "== extra (rc $?)"; tail -6 "$OUT/extra.log"
fi
python3 crates/train/bench/ratios.py "$OUT" | tee "$OUT/ratios.md"
tar czf "$FINAL/results.tgz" -C /tmp res
if [ -n "${CACHE_BACK:-}" ] && [ -d /tmp/scalelab-cache ]; then
  tar czf - -C /tmp scalelab-cache | split -b 15M - "$FINAL/cubecl-cache.tgz.part-"
fi
cp "$OUT/ratios.md" "$FINAL/"
