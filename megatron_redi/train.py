"""Train: ``python -m megatron_redi.train --config FILE.yaml [--export-hf DIR] [--section.key value ...]``

Launch with torchrun for several processes or nodes (examples/ has single-node, tiny CPU and
SLURM launchers). Stages: ``sft`` (stage 1) and ``pairwise`` with loss redi | symmetric | dpo | simpo.
"""

from __future__ import annotations

import os
import sys

from .atomic import OutputExistsError
from .checkpoint.hf_mapping import CheckpointError
from .config import ConfigError
from .data import DatasetError
from .parallel import LayoutError
from .training import TrainConfigError, TrainingStopped, load_config, train


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Growable allocator segments: micro-batches of varying length fragment fixed ones (the
    # CUDA allocator reads this at its first allocation, which comes later).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    config = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            print("error: --config needs a file", file=sys.stderr)
            return 2
        config = argv[i + 1]
        del argv[i:i + 2]
    argv = ["--train.export_hf" if a == "--export-hf" else a for a in argv]  # the short spelling
    try:
        cfg = load_config(config, argv)
        checkpoint = train(cfg)
    except (TrainConfigError, ConfigError, CheckpointError, DatasetError, LayoutError, OutputExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    print(f"done: {checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
