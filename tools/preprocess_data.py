#!/usr/bin/env python
"""Teacher traces (OpenR1-Math-Raw schema) -> tokenised D_SFT and D_Pref for training.

The program is megatron_redi/commands/preprocess_data.py (``python -m megatron_redi.commands.preprocess_data`` is the same).
"""

import sys

from megatron_redi.commands.preprocess_data import main

if __name__ == "__main__":
    sys.exit(main())
