#!/usr/bin/env bash
# Stage 2, DPO baseline (Appendix C.4's best: beta 0.001, lr 2e-7); the reference is the SFT model,
# its log-probs computed once before training and stored beside the data.
#
#   MODEL=ckpt/sft_1.5b DATA=data/redi OUT=runs/dpo_1.5b bash examples/run_dpo_1.5b.sh [--section.key value ...]
#
# MODEL: the SFT checkpoint (HF or native); DATA: tools/preprocess_data.py's output directory.
export CONFIG=${CONFIG:-$(dirname "$0")/configs/dpo_1.5b.yaml} OUT=${OUT:-runs/dpo_1.5b}
exec bash "$(dirname "$0")/run_pairwise.sh" "$@"
