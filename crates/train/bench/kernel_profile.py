#!/usr/bin/env python3
"""Where a step's GPU time goes: sums `scalelab train --profile-kernels FILE` by kernel.

usage: kernel_profile.py FILE [--top K] [--skip-first N]
                              [--marker NAME --per-step K [--steps FIRST:LAST]]

Every launch line is `| <duration> | <kernel>`. Without --marker the whole file is summed (the
first N launches can be left out). With it, the launches are cut into steps, each ending at the
K-th launch of the kernel NAME (e.g. `ChunkFusedMmaKernel`, launched a fixed number of times per
training step); the time of every step is listed, and the table averages the steps FIRST..LAST
(1-based, inclusive; default: the second to the second-to-last, leaving out the first step's
compilation and autotuning and the tail with validation). Profiling waits for every kernel, so
these are device times per launch, not the step's wall time.
"""
import argparse
import collections
import re

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")


def launches(path, skip_first):
    """(kernel name, ms) of every launch line after the first `skip_first`."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                name = re.sub(r"<.*", "", m.group(3))[:90]
                out.append((name, float(m.group(1)) * UNITS[m.group(2)]))
    return out[skip_first:]


def steps(runs, marker, per_step):
    """The launches cut after every `per_step`-th launch of `marker` (the rest is the last)."""
    cut, cur, seen = [], [], 0
    for name, ms in runs:
        cur.append((name, ms))
        if name.split(" |")[0].strip() == marker:
            seen += 1
            if seen % per_step == 0:
                cut.append(cur)
                cur = []
    if cur:
        cut.append(cur)
    return cut


def table(runs, top, divide=1):
    total, count = collections.Counter(), collections.Counter()
    for name, ms in runs:
        total[name] += ms
        count[name] += 1
    grand = sum(total.values()) or 1.0
    print("| kernel | launches | ms | share |")
    print("| --- | ---: | ---: | ---: |")
    for name, ms in total.most_common(top):
        print(f"| `{name}` | {count[name] / divide:g} | {ms / divide:.1f} | {100 * ms / grand:.1f}% |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--skip-first", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--marker")
    ap.add_argument("--per-step", type=int, default=1)
    ap.add_argument("--steps")
    a = ap.parse_args()
    runs = launches(a.file, a.skip_first)
    if not a.marker:
        print(f"{len(runs)} launches, {sum(ms for _, ms in runs):.1f} ms of kernel time\n")
        table(runs, a.top)
        return
    cut = steps(runs, a.marker, a.per_step)
    for i, s in enumerate(cut, 1):
        print(f"step {i}: {sum(ms for _, ms in s):.1f} ms in {len(s)} launches")
    first, last = 2, max(2, len(cut) - 1)
    if a.steps:
        first, last = (int(x) for x in a.steps.split(":"))
    chosen = [r for s in cut[first - 1:last] for r in s]
    n = max(1, min(last, len(cut)) - first + 1)
    print(f"\nper step, steps {first} to {last}: {sum(ms for _, ms in chosen) / n:.1f} ms\n")
    table(chosen, a.top, n)


if __name__ == "__main__":
    main()
