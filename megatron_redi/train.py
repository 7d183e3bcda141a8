"""Train: python -m megatron_redi.train --config FILE.yaml [--export-hf DIR] [--section.key value ...]

Launch with torchrun for several processes or nodes (examples/launch.sh on a node,
examples/slurm_redi.sbatch over several; examples/configs/paper/ holds the paper's runs). Stages:
sft (stage 1) and pairwise with loss.type redi | symmetric | dpo | simpo. Values on the command line
override the YAML file's; --print-config shows the resolved configuration and exits.
Exit codes: 0 done, 2 bad input (named), 3 stopped (a signal: resume with the same command; the
collapse alarm with collapse.stop; too many non-finite steps).
"""

from __future__ import annotations

import os
import sys

import yaml

from .cli import STOPPED_EXIT, command
from .training import TrainConfigError, TrainingStopped, load_config, train
from .training.config import describe, to_dict


@command
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Growable allocator segments: micro-batches of varying length fragment fixed ones (the
    # CUDA allocator reads this at its first allocation, which comes later).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\nSections and keys (type or choices, default, meaning):\n\n" + describe())
        return 0
    print_config = "--print-config" in argv
    argv = [a for a in argv if a != "--print-config"]
    config = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise TrainConfigError("--config needs a file")
        config = argv[i + 1]
        del argv[i:i + 2]
    argv = ["--train.export_hf" if a == "--export-hf" else a for a in argv]  # the short spelling
    try:
        cfg = load_config(config, argv)
        if print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        checkpoint = train(cfg)
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return STOPPED_EXIT
    if os.environ.get("RANK", "0") == "0":  # one line for the run, not one per rank
        print(f"done: {checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
