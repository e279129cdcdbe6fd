#!/usr/bin/env bash
# The lightning kernels on the GPU machine, in as few device calls as possible. Run it from the
# folder that `kernels/bench/prepare.sh` stages (the bench binary `lightning`, the test binary
# `cuda_kernels`, this script, compare_fla.py and whl/ with fla 0.6.0's wheels); logs and JSON go
# to $OUT.
#
# STEPS (comma-separated; default "fla,ours,merge"; they run in the order of this script's
# body below, whatever their order in STEPS):
#   fla           the device's copy and bf16 matmul ceilings, then fla and PyTorch SDPA (at TS)
#   ours          our kernels: forward, forward+backward and decode (the speed table)
#   base          the same speed table from ./lightning-base, an earlier build staged beside the
#                 current one (gzipped into .gpu/lightning-base.gz by hand), for an A/B of a
#                 kernel change in one call
#   ours-split    ours with the split pair wherever the one-launch kernel would run
#                 (SCALELAB_LIGHTNING_SCAN=split)
#   ours-fused    ours with the one-launch kernel wherever it applies (SCALELAB_LIGHTNING_SCAN=fused)
#   ours-plain    ours with every scan on the plain kernel (SCALELAB_LIGHTNING_SCAN=plain)
#   ours-env      ours once per entry of OURS_ENV (space-separated "name:VAR=value,VAR=value"), the
#                 same build under other settings, e.g. OURS_ENV="split:SCALELAB_LIGHTNING_SCAN=split"
#                 (ours-<name>.log, .jsonl; merged with the others)
#   check-env     check-kernels once per entry of OURS_ENV (check-<name>.log)
#   check-fused   check-kernels with SCALELAB_LIGHTNING_SCAN=fused; check-split with =split
#   cuda-tests    the CUDA kernel tests (./cuda_kernels, tests/cuda_kernels.rs): every kept kernel
#                 against the f64 references, outputs and gradients (cuda-tests.log)
#   merge         the merged table: ratios to fla and to the split design's memory floor
#   check         every output and gradient against the f32 reference (H=64, D=128, T=1000),
#                 then bf16 kernels against the f32 kernel at B=4, H=32 for CHECK_TS
#   probe         `lightning --probe` (forward errors at small shapes, then forward and
#                 forward+backward at PROBE_TS, default 8192)
#   check-kernels the bf16 kernels (and f16 with f32 decay rates, at the first shape) against the
#                 f32 kernel (H=64 T=1000 with a tail and an initial state, B=4 H=32 T=2048 with
#                 steep decays, head dim 64 at B x H = 256 and 32, dk=64 dv=128, then B=4 H=32 at
#                 CHECK_TS; then the decode checks): every gradient, no tensor-op reference (about
#                 45 s warm; 420-480 s as a fresh machine's first step: give it its own call,
#                 CHECK_TIMEOUT defaults to 540 s)
#   ncu           Nsight Compute on `lightning --probe` at T=NCU_T (default 8192): the kernels'
#                 time, registers, occupancy and stall reasons (ncu.txt). The probe launches 6
#                 scan kernels at its small shapes, then 14 for the timed forwards at NCU_T, then
#                 each forward+backward (7: forward, dq, two each; the dk/dv pair three).
#                 Defaults NCU_SKIP=6 NCU_COUNT=2 (one forward); NCU_SKIP=20 NCU_COUNT=7 (one
#                 fwd+bwd); NCU_KERNELS (a regex) narrows the kernels counted. Allow NCU_TIMEOUT=240: each profiled kernel is replayed 17 times.
#   ncu-time      each kernel's device time (one counter, one replay pass) over `lightning --probe
#                 --ts NCU_TIME_TS` (default 2048,8192), summed per kernel and grid by
#                 kernel_times.py (ncu-time.txt): where a forward's or a backward's time goes;
#                 NCU_TIME_KERNELS (a regex, default our kernels; "." for every kernel)
#   overhead      `lightning --overhead T` for T in OVERHEAD_TS (default 2048,65536): forwards
#                 through the fusion layer and without it, 5 to 1000 calls back to back
#   ds            `lightning --ts DS_TS --ds` (default 2048,8192): forward+backward with trained
#                 decays (their f32 `ds` scans) beside the usual rows (ds.log, ds.jsonl)
#   decode        `lightning --decode DECODE_BATCHES` (default 1,256: the decode check, the copy
#                 row, then decode steps; decode-steps.log)
#   sass          the CUDA source CubeCL generates for the probe's kernels (cubecl-source.log),
#                 then Nsight Compute's per-instruction SASS listing of one SASS_KERNEL launch
#                 (regex, default chunk_fused) at T=2048: executions and stall samples per
#                 instruction (sass.csv.gz) and its sections (sass-summary.txt), from one
#                 profiling pass with its launch statistics (registers, shared memory), to count
#                 what a chunk step issues (kernels/bench/sass_counts.py reads sass.csv.gz)
#   smem-hw       hardware counters of one SASS_KERNEL launch (default chunk_fused) at T=2048, not
#                 the source page's per-instruction model: shared-memory wavefronts and bank
#                 conflicts by operation, LDGSTS / LDSM / shared instruction counts, the LDGSTS
#                 global requests and sectors (smem-hw.txt); to check the source page's copy counts
#   decode-ncu    the decode check, then batch-256 decode steps alone (decode.log), then one
#                 timed step under Nsight Compute with its DRAM bytes read and written
#                 (decode-ncu.txt)
# Knobs: TS=2048,8192 (lengths), REFMAX=T (tensor-op reference up to T; 0 = none, the default),
# CHECK_TS (default 2048,8192), FLA_TIMEOUT, BENCH_TIMEOUT, CHECK_TIMEOUT, TESTS_TIMEOUT (seconds).
# Costs seen on the H200: a fresh machine about 30 s; fla 145-190 s; ours 15-30 s (REFMAX=2048
# adds minutes of reference compilation); check-kernels 45 s warm, 180-480 s as a fresh machine's
# first step (compiling every kernel); the full check over 330 s (the tensor-op reference's
# compilation and autotuning under Autodiff); ncu on one kernel about 110 s, ncu-time at one
# length about 130 s.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
STEPS=,${STEPS:-fla,ours,merge},
TS=${TS:-2048,4096,8192,32768,65536}
mkdir -p "$OUT"
has() { [[ $STEPS == *",$1,"* ]]; }
stamp() { echo "=== $1 ($(date +%T), ${SECONDS}s in)"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if has fla; then
  stamp fla
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site whl/*.whl \
    && export PYTHONPATH=/tmp/site
  timeout "${FLA_TIMEOUT:-300}" python3 compare_fla.py --ts "$TS" --json "$OUT/fla.jsonl" > "$OUT/fla.log" 2>&1
  grep -E "^ceiling|Error|error" "$OUT/fla.log" | tail -5
fi
bench() { # name, then extra environment
  local name=$1; shift
  stamp "$name"
  env "$@" timeout "${BENCH_TIMEOUT:-360}" "${BIN:-./lightning}" --ts "$TS" --reference-max "${REFMAX:-0}" \
    --json "$OUT/$name.jsonl" > "$OUT/$name.log" 2>&1
  grep -v "^\s*$" "$OUT/$name.log" | tail -40
}
has ours && bench ours
if has base; then # staged gzipped: two binaries would pass the device tool's carry limit
  [ -f lightning-base.gz ] && gunzip -kf lightning-base.gz && chmod +x lightning-base
  [ -x ./lightning-base ] && BIN=./lightning-base bench base
fi
has ours-split && bench ours-split SCALELAB_LIGHTNING_SCAN=split
has ours-fused && bench ours-fused SCALELAB_LIGHTNING_SCAN=fused
has ours-plain && bench ours-plain SCALELAB_LIGHTNING_SCAN=plain
env_names=()
for entry in ${OURS_ENV:-}; do env_names+=("${entry%%:*}"); done
if has ours-env; then
  for entry in ${OURS_ENV:-}; do
    envs=${entry#*:}
    bench "ours-${entry%%:*}" ${envs//,/ }
  done
fi
if has merge; then
  for name in ours base ours-split ours-fused ours-plain "${env_names[@]/#/ours-}"; do
    [ -s "$OUT/$name.jsonl" ] || continue
    stamp "merged: $name (ms; ratios > 1 are slower)"
    python3 compare_fla.py --from-json "$OUT/fla.jsonl" --scalelab "$OUT/$name.jsonl" \
      | tee "$OUT/merged-$name.txt"
  done
fi
if has probe; then
  stamp probe
  timeout "${PROBE_TIMEOUT:-120}" ./lightning --probe --ts "${PROBE_TS:-8192}" > "$OUT/probe.log" 2>&1
  grep -E "probe|panicked|Error" "$OUT/probe.log"
fi
check() { # name, then extra environment
  local name=$1; shift
  stamp "$name"
  env "$@" timeout "${CHECK_TIMEOUT:-280}" ./lightning --check --check-ts "${CHECK_TS:-2048,8192}" \
    --ts 64 --reference-max 0 > "$OUT/$name.log" 2>&1
  grep -E "^check|panicked|Error" "$OUT/$name.log"
}
has check && check check
check_kernels() { # name, then extra environment
  local name=$1; shift
  stamp "$name"
  env "$@" timeout "${CHECK_TIMEOUT:-540}" ./lightning --check-kernels \
    --check-ts "${CHECK_TS:-2048,8192}" --ts 64 --reference-max 0 > "$OUT/$name.log" 2>&1
  grep -E "^check|panicked|Error" "$OUT/$name.log"
}
has check-kernels && check_kernels check-kernels
has check-fused && check_kernels check-fused SCALELAB_LIGHTNING_SCAN=fused
has check-split && check_kernels check-split SCALELAB_LIGHTNING_SCAN=split
if has cuda-tests; then
  stamp cuda-tests
  timeout "${TESTS_TIMEOUT:-540}" ./cuda_kernels --nocapture > "$OUT/cuda-tests.log" 2>&1
  grep -E "^test |test result|panicked|skipped" "$OUT/cuda-tests.log"
fi
if has check-env; then
  for entry in ${OURS_ENV:-}; do
    envs=${entry#*:}
    check_kernels "check-${entry%%:*}" ${envs//,/ }
  done
fi
if has ncu; then
  stamp ncu
  timeout "${NCU_TIMEOUT:-300}" ncu --clock-control none --target-processes all \
    --kernel-name regex:"${NCU_KERNELS:-chunk_|scan_|decode_}" --launch-skip "${NCU_SKIP:-6}" --launch-count "${NCU_COUNT:-2}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section SchedulerStats \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio|smsp__sass_inst_executed_op_local_(ld|st)\.sum" \
    ./lightning --probe --ts "${NCU_T:-8192}" > "$OUT/ncu.txt" 2>&1
  grep -E "^\s+(chunk_|scan_|tiled_)|Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput" \
    "$OUT/ncu.txt" | head -60
  # The stall reasons, largest first (warps stalled per issued instruction).
  grep -E "issue_stalled" "$OUT/ncu.txt" | sort -k3 -g -r | head -12
  # Register spills: local-memory loads and stores executed.
  grep -E "op_local_(ld|st)" "$OUT/ncu.txt"
fi
if has smem-hw; then
  stamp smem-hw
  timeout "${NCU_TIMEOUT:-240}" ncu --clock-control none --kernel-name regex:"${SASS_KERNEL:-chunk_fused}" \
    --launch-skip "${SASS_SKIP:-0}" --launch-count 1 \
    --metrics "regex:^(l1tex__data_pipe_lsu_wavefronts_mem_shared|l1tex__data_bank_conflicts_pipe_lsu_mem_shared|smsp__sass_inst_executed_op_(ldgsts|ldsm|shared)|l1tex__t_(requests|sectors)_pipe_lsu_mem_global_op_ldgsts).*\.sum$" \
    ./lightning --probe --ts 2048 > "$OUT/smem-hw.txt" 2>&1
  grep -E "__|==PROF==|==ERROR==|==WARNING==" "$OUT/smem-hw.txt" | head -60
fi
if has sass; then
  stamp sass
  CUBECL_DEBUG_LOG="$OUT/cubecl-source.log" timeout 120 ./lightning --probe --ts 2048 \
    > "$OUT/sass-probe.log" 2>&1
  grep -c "__global__" "$OUT/cubecl-source.log"
  gzip -9 "$OUT/cubecl-source.log"  # 9 MB of every kernel's source; the carry limit counts results
  # One profiling pass into a report, read twice: the per-instruction page and the sections.
  timeout "${NCU_TIMEOUT:-300}" ncu --clock-control none --kernel-name regex:"${SASS_KERNEL:-chunk_fused}" \
    --launch-skip "${SASS_SKIP:-0}" --launch-count 1 --section SourceCounters --section InstructionStats \
    --section WarpStateStats --section LaunchStats -f -o "$OUT/sass" ./lightning --probe --ts 2048 > "$OUT/sass-run.log" 2>&1
  ncu --import "$OUT/sass.ncu-rep" --page source --print-source sass --csv > "$OUT/sass.csv" 2>&1
  ncu --import "$OUT/sass.ncu-rep" --page details > "$OUT/sass-summary.txt" 2>&1
  rm -f "$OUT/sass.ncu-rep"
  wc -l "$OUT/sass.csv"; head -c 600 "$OUT/sass.csv"; echo; gzip -9 "$OUT/sass.csv"
  grep -A40 "Section: Instruction" "$OUT/sass-summary.txt" | head -60
  grep -E "relative error|Registers Per Thread|Dynamic Shared|Block Size" "$OUT/sass-summary.txt" "$OUT/sass-run.log"
fi
if has ncu-time; then
  stamp ncu-time
  timeout "${NCU_TIMEOUT:-240}" ncu --clock-control none --target-processes all \
    --kernel-name regex:"${NCU_TIME_KERNELS:-chunk_|scan_|decode_|tiled_}" --metrics gpu__time_duration.sum \
    ./lightning --probe --ts "${NCU_TIME_TS:-2048,8192}" > "$OUT/ncu-time-raw.txt" 2>&1
  python3 kernel_times.py "$OUT/ncu-time-raw.txt" | tee "$OUT/ncu-time.txt"
fi
if has overhead; then
  stamp overhead
  ts=${OVERHEAD_TS:-2048,65536}
  for t in ${ts//,/ }; do
    timeout 120 ./lightning --overhead "$t" 2>&1 | grep -E "overhead|panicked" | tee -a "$OUT/overhead.txt"
  done
fi
if has ds; then
  stamp ds
  timeout "${BENCH_TIMEOUT:-360}" ./lightning --ts "${DS_TS:-2048,8192}" --reference-max 0 --ds \
    --json "$OUT/ds.jsonl" > "$OUT/ds.log" 2>&1
  grep -E "fwd\+bwd|panicked" "$OUT/ds.log"
fi
if has decode; then
  stamp decode
  timeout 120 ./lightning --decode "${DECODE_BATCHES:-1,256}" > "$OUT/decode-steps.log" 2>&1
  grep -E "check|decode|copy|panicked" "$OUT/decode-steps.log"
fi
if has decode-ncu; then
  # Batch-256 decode alone, then one step under Nsight Compute: the DRAM bytes it moves against
  # the 2.15 GB of state it reads and writes (a step faster than the copy rate moves fewer).
  # The launch skip passes the decode check's 6 launches and the first 4 warm-up steps.
  stamp decode-ncu
  timeout 120 ./lightning --decode 256 > "$OUT/decode.log" 2>&1
  grep -E "decode|panicked" "$OUT/decode.log"
  timeout "${NCU_TIMEOUT:-240}" ncu --clock-control none --kernel-name regex:decode_ --launch-skip 10 \
    --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
    ./lightning --decode 256 > "$OUT/decode-ncu.txt" 2>&1
  grep -E "dram__bytes|gpu__time|DRAM Throughput|Memory Throughput|Compression" "$OUT/decode-ncu.txt"
fi
stamp done
# The device tool brings back only a few files per call: one archive holds them all.
tar czf /tmp/results.tgz -C "$OUT" . && rm -f "$OUT"/* && mv /tmp/results.tgz "$OUT/"
