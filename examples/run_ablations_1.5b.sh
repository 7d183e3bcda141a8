#!/usr/bin/env bash
# The paper's Table 2 in one command, on one node: Qwen2.5-Math-1.5B -> SFT 3 epochs (the start) ->
# each stage-2 objective at the paper's best setting from it (REDI, symmetric REDI, DPO, SimPO), each
# run's best checkpoint picked by the intermediate protocol and evaluated on the five benchmarks by
# the final protocol, as is the start -> Table 2 beside the paper's own rows.
#
#   bash examples/run_ablations_1.5b.sh
#
# Stages: data, sft_3ep, start_final, then LOSS, LOSS_select, LOSS_final for each of redi, symmetric,
# dpo, simpo, then table. The variables are examples/run_redi_1.5b.sh's (OUT defaults to
# runs/ablations_1.5b; SFT=DIR starts from an existing 3-epoch model), and so are resuming, DRY_RUN=1
# and TOY=1.
set -euo pipefail
exec python -m megatron_redi.recipe table2 --root "$(cd "$(dirname "$0")/.." && pwd)" "$@"
