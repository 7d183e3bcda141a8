#!/usr/bin/env python
"""The panels of the paper's Figure 6 from one or several runs' metrics.jsonl, as a PNG.

The program is megatron_redi/commands/plot_metrics.py (``python -m megatron_redi.commands.plot_metrics`` is the same).
"""

import sys

from megatron_redi.commands.plot_metrics import main

if __name__ == "__main__":
    sys.exit(main())
