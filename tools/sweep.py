#!/usr/bin/env python
"""A grid of stage-2 runs from one config: the paper's Appendix C.4 sweeps, or any grid.

    python tools/sweep.py --config examples/configs/paper/qwen2.5-math-1.5b_redi.yaml --preset redi \
        --model runs/sft_3ep/hf --data data/redi --out runs/sweep_redi              (print the plan)
    ... --run                  run them one after another on this node (examples/launch.sh each)
    ... --slurm sweep.sbatch   write a SLURM array script, one node per run: sbatch sweep.sbatch
    ... --grid optim.lr=1e-6,2e-6 --grid loss.alpha=0.5,0.8     any grid (the product of the values)

Every run is the config plus its own overrides, visible on its command line, in OUT/NAME (named by
its values). Presets, the values the paper explored (Appendix C.4):
    redi    alpha 0.2, 0.8 at lr 1e-6; 0.5 at 1e-6, 2e-6; 1.0 at 1e-6, 2e-7, 1e-7
    dpo     beta 0.1 at lr 1e-6, 1e-7, 1e-8; beta 0.01 and 0.001 at 1e-6, 5e-7, 2e-7, 1e-7
    simpo   (beta 2, gamma 1, lr 5e-7), (beta 10, gamma 5, lr 3e-7)
The paper reports each run's best checkpoint: stage-2 configs keep the weights of every checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.settings import ConfigError
from megatron_redi.recipe.sweep import PRESETS, grid_runs, run_name
from megatron_redi.training import TrainConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def commands(args, runs: list[dict]) -> list[tuple[str, dict, list[str]]]:
    """(name, environment, launcher arguments) of each run."""
    out = []
    for overrides in runs:
        name = run_name(overrides)
        env = {"CONFIG": args.config, "MODEL": args.model, "DATA": args.data, "OUT": os.path.join(args.out, name)}
        flags = [x for key, value in overrides.items() for x in (f"--{key}", str(value))]
        out.append((name, env, flags + args.extra))
    return out


def slurm_script(args, planned) -> str:
    cases = "\n".join(f"    {i}) env {' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())} "
                      f"bash examples/launch.sh {shlex.join(flags)} ;;" for i, (_, env, flags) in enumerate(planned))
    return f"""#!/usr/bin/env bash
# {len(planned)} runs of {args.config}, one node each (written by tools/sweep.py; submit from the repository's root).
#SBATCH --job-name=sweep
#SBATCH --array=0-{len(planned) - 1}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
set -euo pipefail
case "$SLURM_ARRAY_TASK_ID" in
{cases}
esac
"""


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="the config every run starts from")
    p.add_argument("--model", default=os.environ.get("MODEL"), help="the starting checkpoint (default: $MODEL)")
    p.add_argument("--data", default=os.environ.get("DATA"), help="preprocessed data (default: $DATA)")
    p.add_argument("--out", required=True, help="runs go to OUT/NAME")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", choices=sorted(PRESETS), help="the paper's sweep of a loss")
    what.add_argument("--grid", action="append", metavar="SECTION.KEY=V1,V2", help="an axis of the grid (repeatable)")
    do = p.add_mutually_exclusive_group()
    do.add_argument("--run", action="store_true", help="run them one after another here")
    do.add_argument("--slurm", metavar="FILE", help="write a SLURM array script")
    p.add_argument("--launcher", default=os.path.join(ROOT, "examples", "launch.sh"), help=argparse.SUPPRESS)
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then further --section.key value for every run")
    args = p.parse_args(argv)
    args.extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    missing = [name for name in ("model", "data") if not getattr(args, name)]
    if missing:
        raise ConfigError(f"give --{' and --'.join(missing)} (or set {' and '.join(m.upper() for m in missing)})")
    runs = PRESETS[args.preset] if args.preset else grid_runs(args.grid)
    if args.preset:  # a DPO grid on a REDI config would train REDI and ignore beta
        loss = load_config(args.config, ["--model.path", args.model, "--data.path", args.data]).loss.type
        if loss != args.preset:
            raise ConfigError(f"--preset {args.preset} sweeps {args.preset}'s settings, but {args.config} trains "
                              f"loss.type {loss}: give a {args.preset} config")
    planned = commands(args, runs)
    for name, env, flags in planned:  # each run's configuration, as its trainer will read it, before any is written
        try:
            load_config(args.config, ["--model.path", args.model, "--data.path", args.data, *flags])
        except TrainConfigError as e:
            raise TrainConfigError(f"run {name}: {e}") from None
    inputs = (args.config, args.model, args.data)
    if args.slurm:
        check_output(args.slurm, overwrite=True, keep=inputs)
    for output in [os.path.join(args.out, "sweep.json")] + [env["OUT"] for _, env, _ in planned]:
        check_output(output, overwrite=True, keep=inputs)
    for name, env, flags in planned:
        print(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items())} bash examples/launch.sh {shlex.join(flags)}")
    with atomic_file(os.path.join(args.out, "sweep.json")) as f:
        json.dump([{"name": n, "env": e, "args": a} for n, e, a in planned], f, indent=2)
    if args.slurm:
        with atomic_file(args.slurm) as f:
            f.write(slurm_script(args, planned))
        print(f"{args.slurm}: {len(planned)} array tasks (sbatch {args.slurm})")
    if args.run:
        failed = [name for name, env, flags in planned
                  if subprocess.run(["bash", args.launcher, *flags], env={**os.environ, **env}).returncode]
        print(f"{len(planned) - len(failed)} of {len(planned)} runs finished" + (f"; failed: {failed}" if failed else ""))
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
