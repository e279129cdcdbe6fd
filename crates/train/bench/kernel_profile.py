#!/usr/bin/env python3
"""Where a step's GPU time goes: sums `scalelab train --profile-kernels FILE` by kernel.

usage: kernel_profile.py FILE [--skip-first N] [--top K]

Every launch line is `| <duration> | <kernel>`; the first N launches (compilation and autotune
of the first step) can be left out. Prints a markdown table: kernel, launches, total ms, share.
"""
import argparse
import collections
import re

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--skip-first", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    total = collections.Counter()
    count = collections.Counter()
    seen = 0
    with open(a.file, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            seen += 1
            if seen <= a.skip_first:
                continue
            name = re.sub(r"<.*", "", m.group(3))[:90]
            total[name] += float(m.group(1)) * UNITS[m.group(2)]
            count[name] += 1
    grand = sum(total.values()) or 1.0
    print(f"{seen - min(seen, a.skip_first)} launches, {grand:.1f} ms of kernel time\n")
    print("| kernel | launches | ms | share |")
    print("| --- | ---: | ---: | ---: |")
    for name, ms in total.most_common(a.top):
        print(f"| `{name}` | {count[name]} | {ms:.1f} | {100 * ms / grand:.1f}% |")


if __name__ == "__main__":
    main()
