"""One line from `nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms N`
samples: the SM clock's spread and the power drawn while the GPU was busy (tools/gpu_check.sh).

    python tools/clock_summary.py samples.csv
"""

import argparse
import sys

from megatron_redi.cli import HelpFormatter, command
from megatron_redi.training.profiling import summarize_clocks


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("samples", help="the CSV nvidia-smi wrote")
    args = p.parse_args(argv)
    with open(args.samples) as f:
        print(summarize_clocks(f.read().splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
