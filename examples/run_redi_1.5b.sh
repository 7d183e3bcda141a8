#!/usr/bin/env bash
# Stage 2, REDI (Appendix C.4): alpha 0.8, lr 1e-6, 32 pairs per step, 1 epoch, from the SFT model.
#
#   MODEL=ckpt/sft_1.5b DATA=data/redi OUT=runs/redi_1.5b bash examples/run_redi_1.5b.sh [--section.key value ...]
#
# MODEL: the SFT checkpoint (HF or native); DATA: tools/preprocess_data.py's output directory.
export CONFIG=${CONFIG:-$(dirname "$0")/configs/redi_1.5b.yaml} OUT=${OUT:-runs/redi_1.5b}
exec bash "$(dirname "$0")/run_pairwise.sh" "$@"
