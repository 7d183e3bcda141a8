#!/usr/bin/env bash
# Stage 2 of the paper (Appendix C.4) on one node of 8 GPUs, for any pairwise loss: the loss and its
# hyperparameters come from CONFIG (run_redi_1.5b.sh, run_dpo_1.5b.sh and run_simpo_1.5b.sh set it).
#
#   CONFIG=examples/configs/redi_1.5b.yaml MODEL=ckpt/sft_1.5b DATA=data/redi OUT=runs/x bash examples/run_pairwise.sh [--section.key value ...]
#
# MODEL: the SFT checkpoint (HF or native); DATA: tools/preprocess_data.py's output directory.
set -euo pipefail
: "${MODEL:?set MODEL to the stage-1 (SFT) checkpoint, HF or native}"
: "${DATA:?set DATA to the output of tools/preprocess_data.py}"
: "${CONFIG:?set CONFIG to a pairwise config, e.g. examples/configs/redi_1.5b.yaml}"
OUT=${OUT:-runs/$(basename "$CONFIG" .yaml)}
NGPU=${NGPU:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
export CUDA_DEVICE_MAX_CONNECTIONS=1  # keep TP/DP communication kernels in issue order

MODEL_ARGS=(--model.path "$MODEL" --model.dtype bf16 --model.recompute auto)
PARALLEL_ARGS=(--parallel.tensor_parallel "${TP:-1}" --parallel.sequence_parallel true --parallel.zero1 true)
DATA_ARGS=(--data.path "$DATA" --data.global_batch 32 --data.micro_batch_tokens 40000)
OUTPUT_ARGS=(--train.output_dir "$OUT" --train.export_hf "$OUT/hf" --train.export_overwrite true --checkpoint.every 200 --checkpoint.keep 3)

torchrun --nproc-per-node "$NGPU" -m megatron_redi.train --config "$CONFIG" \
    "${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${DATA_ARGS[@]}" "${OUTPUT_ARGS[@]}" "$@"
