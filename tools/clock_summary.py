#!/usr/bin/env python
"""One line from `nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms N`
samples: the SM clock's spread and the power drawn while the GPU was busy (tools/gpu_check.sh).

    python tools/clock_summary.py samples.csv
"""

import statistics
import sys


def summarize(lines: list[str]) -> str:
    samples = []
    for line in lines:
        try:
            clock, power = (float(x) for x in line.split(","))
        except ValueError:  # a partial last line, or "[N/A]"
            continue
        samples.append((clock, power))
    busy = [s for s in samples if s[1] > 0.5 * max(p for _, p in samples)] if samples else []
    if not busy:
        return "clocks: no samples"
    clocks, powers = [c for c, _ in busy], [p for _, p in busy]
    return (f"clocks while busy ({len(busy)} of {len(samples)} samples): SM {min(clocks):.0f} / "
            f"{statistics.median(clocks):.0f} / {max(clocks):.0f} MHz (min / median / max), "
            f"power median {statistics.median(powers):.0f} W, max {max(powers):.0f} W")


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarize(f.read().splitlines()))
