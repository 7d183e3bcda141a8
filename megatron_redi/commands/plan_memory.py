"""Which tensor x context-parallel layouts fit a micro-batch on your GPUs, before you launch.

    python tools/plan_memory.py --preset qwen2.5-7b --tokens 65536 --gpus 8 --card-gb 80

For every TP x CP that divides --gpus (and that the model's heads allow), the rest data-parallel,
it prints what one rank would hold, from the trainer's own estimate (megatron_redi/model/memory.py):
weights and optimizer state (ZeRO-1 over DP x CP unless --no-zero1), the activations of a
micro-batch of --tokens tokens (a REDI pair: both traces) with the layers "recompute: auto" would
recompute in full, whether it fits, and the host memory an asynchronous checkpoint copies to (host
GB: the rank holding most; checkpoint.async_save). Fewer layers in full is faster (each costs about a third of
its forward again); among layouts that fit, prefer the smallest TP and CP that need few.
"""

from __future__ import annotations

import argparse
import sys

from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.model_config import PRESETS, ModelConfig, preset
from megatron_redi.model.memory import rank_plan
from megatron_redi.parallel import LayoutError


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--preset", choices=sorted(PRESETS), help="a known model shape")
    model.add_argument("--model", help="a directory or config.json of an HF model")
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[65536], help="micro-batch tokens")
    parser.add_argument("--gpus", type=positive_int, default=8, help="GPUs of the run")
    parser.add_argument("--card-gb", type=float, default=80.0, help="memory of one GPU, GB (1e9 bytes)")
    parser.add_argument("--no-zero1", action="store_true", help="optimizer state not sliced over DP x CP")
    args = parser.parse_args(argv)
    cfg = preset(args.preset) if args.preset else ModelConfig.from_hf(args.model)
    print(f"{args.preset or args.model}: {cfg.num_parameters() / 1e9:.2f} B parameters, {args.gpus} x "
          f"{args.card_gb:g} GB, ZeRO-1 {'off' if args.no_zero1 else 'on'}")
    print(f"{'tokens':>7} {'TP':>3} {'CP':>3} {'DP':>3}  {'state GB':>8}  {'activations GB':>14}  "
          f"{'layers in full':>14}  fits  {'host GB':>7}")
    for tokens in args.tokens:
        for tp in divisors(args.gpus):
            for cp in divisors(args.gpus // tp):
                try:
                    r = rank_plan(cfg, tp, cp, args.gpus // (tp * cp), tokens, args.card_gb * 1e9, not args.no_zero1)
                except LayoutError:
                    continue  # TP does not divide the heads or the MLP
                print(f"{tokens:>7} {tp:>3} {cp:>3} {r['dp']:>3}  {r['state_bytes'] / 1e9:>8.1f}  "
                      f"{r['activation_bytes'] / 1e9:>14.1f}  {r['full_recompute_layers']:>7} of {cfg.num_layers:<4}"
                      f"  {'yes' if r['fits'] else 'no ':<4}  {r['host_copy_bytes'] / 1e9:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
