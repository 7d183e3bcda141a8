#!/usr/bin/env python
"""One line from `nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms N`
samples: the SM clock's spread and the power drawn while the GPU was busy (tools/gpu_check.sh).

The program is megatron_redi/commands/clock_summary.py (``python -m megatron_redi.commands.clock_summary`` is the same).
"""

import sys

from megatron_redi.commands.clock_summary import main

if __name__ == "__main__":
    sys.exit(main())
