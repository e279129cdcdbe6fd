#!/usr/bin/env bash
# Stages what gpu_train_bench.sh needs, here on the machine without a GPU: the release cuda
# binary (stripped, gzipped, in .gpu/) and the wheels of fla 0.6.0 and einops for the GPU
# machine's Python 3.12 (in .whl/). Both folders are git-ignored; carry them in the device call.
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build --release -p scalelab-cli --features cuda
mkdir -p .gpu .whl
strip -o /tmp/scalelab-stripped "${CARGO_TARGET_DIR:-target}/release/scalelab"
gzip -1 -c /tmp/scalelab-stripped > .gpu/scalelab.gz
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
if ! ls .whl/fla_core-0.6.0-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl fla-core==0.6.0 flash-linear-attention==0.6.0 einops
fi
du -sh .gpu .whl
