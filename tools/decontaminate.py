#!/usr/bin/env python
"""Which training problems share word n-grams with evaluation benchmarks: a report, no data changed.

The program is megatron_redi/commands/decontaminate.py (``python -m megatron_redi.commands.decontaminate`` is the same).
"""

import sys

from megatron_redi.commands.decontaminate import main

if __name__ == "__main__":
    sys.exit(main())
