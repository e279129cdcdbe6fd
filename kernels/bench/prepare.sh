#!/usr/bin/env bash
# Stages what kernels/bench/gpu_run.sh needs into .gpu/ (git-ignored), here on the machine
# without a GPU: the CUDA bench binary and the CUDA kernel tests (built, stripped), the scripts,
# and fla 0.6.0's wheels for the GPU machine's Python 3.12. Then, through the device tool, from
# the repository root:
#   run(command="cd .gpu && STEPS=fla,ours,merge OUT=$OUT bash gpu_run.sh", carry=[".gpu"])
#   run(command="cd .gpu && STEPS=cuda-tests OUT=$OUT bash gpu_run.sh", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p scalelab-kernels --features cuda --bench lightning
cargo test --release -p scalelab-kernels --features cuda --test cuda_kernels --no-run
newest() { ls -t "$target"/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
mkdir -p .gpu/whl
cp "$(newest lightning)" .gpu/lightning
cp "$(newest cuda_kernels)" .gpu/cuda_kernels
strip .gpu/lightning .gpu/cuda_kernels
cp kernels/bench/gpu_run.sh kernels/bench/compare_fla.py kernels/bench/kernel_times.py .gpu/
if ! ls .gpu/whl/fla_core-0.6.0-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/whl fla-core==0.6.0 flash-linear-attention==0.6.0
fi
du -sh .gpu
