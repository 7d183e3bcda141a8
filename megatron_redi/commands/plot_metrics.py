"""The panels of the paper's Figure 6 from one or several runs' metrics.jsonl, as a PNG.

    python tools/plot_metrics.py runs/redi_a0.8 runs/redi_a1.0 --output figure6.png

Panels against the optimizer step: evaluation pass@1 (when the run evaluated), chosen LogPS and
rejected LogPS (mean log-prob per response token), and the update size (norm of the parameter
change per step, the paper's "gradient step size"), with units; the accuracy panel says what it
measured (from the run's config.json: greedy or sampled, how many problems), smoothed panels say
their window, and a dotted line marks the step where a run's collapse alarm fired. Each run is one
line, labelled by its directory name or by --labels.
"""

import argparse
import os
import sys

from megatron_redi.atomic import check_output
from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.settings import ConfigError
from megatron_redi.training.figures import plot

@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    p.add_argument("--labels", nargs="*", help="one label per run (default: directory names)")
    p.add_argument("--smooth", type=positive_int, default=1, help="moving average over this many steps")
    p.add_argument("--output", default="figure6.png")
    args = p.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        raise ConfigError(f"give one label per run ({len(args.runs)} runs, {len(labels)} labels)")
    check_output(args.output, overwrite=True, keep=tuple(args.runs))
    panels = plot(args.runs, labels, args.output, args.smooth)
    print(f"{args.output}: {', '.join(panels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
