#!/usr/bin/env python
"""Convert checkpoints: Hugging Face <-> native (any TP size), and reshard native checkpoints.

    python tools/convert_checkpoint.py hf-to-native --input HF_DIR --output DIR --tp 2
    python tools/convert_checkpoint.py native-to-hf --input DIR --output HF_DIR --dtype bf16
    python tools/convert_checkpoint.py native-to-native --input DIR --output DIR2 --tp 4
"""

import sys

from megatron_redi.checkpoint.convert import main

if __name__ == "__main__":
    sys.exit(main())
