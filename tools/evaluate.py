#!/usr/bin/env python
"""Evaluate checkpoints on benchmarks as the paper did: pass@1 over k samples with its SEM, pass@k,
and, over a run's checkpoints, the curve and the best checkpoint.

The program is megatron_redi/commands/evaluate.py (``python -m megatron_redi.commands.evaluate`` is the same).
"""

import sys

from megatron_redi.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
