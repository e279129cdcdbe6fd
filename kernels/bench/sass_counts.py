#!/usr/bin/env python3
"""Per-chunk counts from `gpu_run.sh`'s `sass` step: one kernel launch's per-instruction SASS
listing (`sass.csv.gz`, Nsight Compute's source page) reduced to what a chunk step costs.

    python3 kernels/bench/sass_counts.py OUT/sass.csv.gz \
        --cubes 128 --warps 8 --chunks 32

prints instructions per warp and chunk by opcode, shared-memory wavefronts and global sectors
per cube and chunk (against Nsight's ideal), and the warps' stall samples by reason and by
opcode.
"""
import argparse
import collections
import csv
import gzip


def rows(path):
    lines = gzip.open(path, "rt").read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"Address"'))
    table = list(csv.reader(lines[start:]))
    header = table[0]
    return [dict(zip(header, r)) for r in table[1:]], header


def opcode(source):
    words = [w for w in source.split() if not w.startswith("@")]
    return words[0] if words else ""


def num(d, key):
    return int(d.get(key) or 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--cubes", type=int, required=True, help="cubes in the launch")
    ap.add_argument("--warps", type=int, required=True, help="warps per cube")
    ap.add_argument("--chunks", type=int, required=True, help="chunks each cube walks")
    a = ap.parse_args()
    table, header = rows(a.csv)
    warp_chunks = a.cubes * a.warps * a.chunks
    cube_chunks = a.cubes * a.chunks

    executed = collections.Counter()
    wavefronts = collections.Counter()
    wavefronts_ideal = collections.Counter()
    sectors = collections.Counter()
    sectors_ideal = collections.Counter()
    for d in table:
        op = opcode(d["Source"].strip())
        executed[op.split(".")[0]] += num(d, "Instructions Executed")
        wavefronts[op] += num(d, "L1 Wavefronts Shared")
        wavefronts_ideal[op] += num(d, "L1 Wavefronts Shared Ideal")
        sectors[op] += num(d, "L2 Theoretical Sectors Global")
        sectors_ideal[op] += num(d, "L2 Theoretical Sectors Global Ideal")

    total = sum(executed.values())
    print(f"instructions per warp and chunk: {total / warp_chunks:.0f}")
    for op, n in executed.most_common(16):
        print(f"  {op:10s} {n / warp_chunks:7.1f}")
    print("shared wavefronts per cube and chunk (ideal)")
    for op, n in wavefronts.most_common():
        if n:
            print(f"  {op:24s} {n / cube_chunks:7.0f} ({wavefronts_ideal[op] / cube_chunks:.0f})")
    print("global sectors per cube and chunk (ideal)")
    for op, n in sectors.most_common():
        if n:
            print(f"  {op:24s} {n / cube_chunks:7.0f} ({sectors_ideal[op] / cube_chunks:.0f})")

    reasons = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
    by_reason = collections.Counter()
    by_op = collections.defaultdict(collections.Counter)
    for d in table:
        op = opcode(d["Source"].strip()).split(".")[0]
        for r in reasons:
            by_reason[r] += num(d, r)
            by_op[op][r] += num(d, r)
    samples = sum(by_reason.values()) or 1
    print(f"stall samples: {samples}")
    for r, n in by_reason.most_common(10):
        print(f"  {r[6:]:18s} {100 * n / samples:5.1f}%")
    print("by opcode (share of samples, its largest reasons)")
    share = collections.Counter({op: sum(c.values()) for op, c in by_op.items()})
    for op, n in share.most_common(10):
        top = ", ".join(f"{k[6:]} {100 * v / samples:.1f}" for k, v in by_op[op].most_common(3))
        print(f"  {op:10s} {100 * n / samples:5.1f}%  [{top}]")


if __name__ == "__main__":
    main()
