#!/usr/bin/env python
"""Write one of the paper's five benchmarks as the evaluator's JSON lines {"problem", "answer", ...}.

The program is megatron_redi/commands/prepare_benchmarks.py (``python -m megatron_redi.commands.prepare_benchmarks`` is the same).
"""

import sys

from megatron_redi.commands.prepare_benchmarks import main

if __name__ == "__main__":
    sys.exit(main())
