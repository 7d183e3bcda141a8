#!/usr/bin/env python
"""Write a random HF checkpoint with a preset's shapes, for benchmarks and memory measurements.

The program is megatron_redi/commands/make_synthetic_checkpoint.py (``python -m megatron_redi.commands.make_synthetic_checkpoint`` is the same).
"""

import sys

from megatron_redi.commands.make_synthetic_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
