#!/usr/bin/env python
"""The paper's analyses of what training does to a model's outputs, each as a JSON file and a plot.

The program is megatron_redi/commands/analyze.py (``python -m megatron_redi.commands.analyze`` is the same).
"""

import sys

from megatron_redi.commands.analyze import main

if __name__ == "__main__":
    sys.exit(main())
