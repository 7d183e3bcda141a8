"""Write a random HF checkpoint with a preset's shapes, for benchmarks and memory measurements.

    python tools/make_synthetic_checkpoint.py --preset qwen2.5-7b --layers 2 --output /tmp/q7b_2l
"""

import argparse
import sys

from megatron_redi.model_config import PRESETS, preset
from megatron_redi.settings import COMPUTE_DTYPES, DTYPES
from megatron_redi.fixtures import write_random_hf_checkpoint
from megatron_redi.cli import HelpFormatter, command, positive_int


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--layers", type=positive_int, help="override num_hidden_layers (default: the preset's)")
    p.add_argument("--dtype", default="bf16", choices=COMPUTE_DTYPES)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    cfg = preset(args.preset, **overrides)
    dtype = DTYPES[args.dtype]
    write_random_hf_checkpoint(args.output, cfg, dtype)
    print(f"{args.output}: {cfg.num_parameters():,} parameters ({args.preset}, {cfg.num_layers} layers, {args.dtype})")


if __name__ == "__main__":
    sys.exit(main())
