"""Sums Nsight Compute's `gpu__time_duration.sum` per kernel and launch grid.

    python3 kernel_times.py ncu-output.txt

Reads the text `ncu --metrics gpu__time_duration.sum` prints (one block per profiled launch: the
kernel's name with its grid and block, then the metric) and prints, per (kernel, grid), the
launch count and the mean and total microseconds, in first-seen order. The grid tells the
sequence length apart (the output kernels' grids count chunks).
"""

import re
import sys

HEAD = re.compile(r"^\s+(\S+)\s+\(([\d, ]+)\)x\(([\d, ]+)\)")
TIME = re.compile(r"gpu__time_duration\.sum\s+(\S+)\s+([\d.,]+)")
SCALE = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def main(path):
    rows, key = {}, None
    with open(path) as f:
        for line in f:
            head = HEAD.match(line)
            if head:
                key = (head.group(1), head.group(2).replace(" ", ""))
                continue
            hit = TIME.search(line)
            if hit and key:
                us = float(hit.group(2).replace(",", "")) * SCALE[hit.group(1)]
                rows.setdefault(key, []).append(us)
                key = None
    print(f"{'kernel':<48} {'grid':>14} {'n':>4} {'mean us':>10} {'total us':>10}")
    for (name, grid), ts in rows.items():
        print(f"{name[:48]:<48} {grid:>14} {len(ts):>4} {sum(ts) / len(ts):>10.1f} {sum(ts):>10.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
