#!/usr/bin/env python
"""Which tensor x context-parallel layouts fit a micro-batch on your GPUs, before you launch.

The program is megatron_redi/commands/plan_memory.py (``python -m megatron_redi.commands.plan_memory`` is the same).
"""

import sys

from megatron_redi.commands.plan_memory import main

if __name__ == "__main__":
    sys.exit(main())
