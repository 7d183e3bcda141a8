#!/usr/bin/env bash
# Stage 2, SimPO baseline (Appendix C.4's best: beta 2, gamma 1, lr 5e-7), 32 pairs per step, 1 epoch.
#
#   MODEL=ckpt/sft_1.5b DATA=data/redi OUT=runs/simpo_1.5b bash examples/run_simpo_1.5b.sh [--section.key value ...]
#
# MODEL: the SFT checkpoint (HF or native); DATA: tools/preprocess_data.py's output directory.
export CONFIG=${CONFIG:-$(dirname "$0")/configs/simpo_1.5b.yaml} OUT=${OUT:-runs/simpo_1.5b}
exec bash "$(dirname "$0")/run_pairwise.sh" "$@"
