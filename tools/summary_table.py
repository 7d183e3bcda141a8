#!/usr/bin/env python
"""A table like the paper's Table 2 from tools/evaluate.py outputs: one row per run, at its best
checkpoint, with pass@1 ± SEM per benchmark and their mean.

The program is megatron_redi/commands/summary_table.py (``python -m megatron_redi.commands.summary_table`` is the same).
"""

import sys

from megatron_redi.commands.summary_table import main

if __name__ == "__main__":
    sys.exit(main())
