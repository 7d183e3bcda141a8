#!/usr/bin/env python
"""One line from `nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms N`
samples: the SM clock's spread and the power drawn while the GPU was busy (tools/gpu_check.sh).

    python tools/clock_summary.py samples.csv
"""

import sys

from megatron_redi.training.profiling import summarize_clocks

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarize_clocks(f.read().splitlines()))
