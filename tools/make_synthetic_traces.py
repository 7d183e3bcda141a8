#!/usr/bin/env python
"""The embedded default's data: a synthetic teacher corpus, a held-out benchmark, a tokenizer.

The program is megatron_redi/commands/make_synthetic_traces.py (``python -m megatron_redi.commands.make_synthetic_traces`` is the same).
"""

import sys

from megatron_redi.commands.make_synthetic_traces import main

if __name__ == "__main__":
    sys.exit(main())
