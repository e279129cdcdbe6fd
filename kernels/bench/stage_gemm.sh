#!/usr/bin/env bash
# Stages the CUDA test binaries (GEMM, lightning and attention kernels) into .gpu/ (git-ignored), stripped
# and gzipped, for kernels/bench/gpu_gemm.sh; build the cuda binary with
# crates/train/bench/stage.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cargo test --release -p scalelab-kernels --features cuda --test cuda_gemm --test cuda_kernels --test attention_kernels --no-run
newest() { ls -t "$target"/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
mkdir -p .gpu
for t in cuda_gemm cuda_kernels attention_kernels; do
  strip -o "/tmp/$t" "$(newest "$t")"
  gzip -1 -c "/tmp/$t" > ".gpu/$t.gz"
done
du -sh .gpu/*.gz
