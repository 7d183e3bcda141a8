#!/usr/bin/env bash
# Stage 2 baseline: SimPO (Appendix C.4: beta 2, gamma 1, lr 5e-7), 32 pairs per step, 1 epoch,
# from the stage-1 SFT model, on one node of 8 GPUs.
#
#   MODEL=ckpt/sft_1.5b DATA=data/redi OUT=runs/simpo_1.5b bash examples/run_simpo_1.5b.sh [--section.key value ...]
#
# MODEL: the SFT checkpoint (HF or native); DATA: tools/preprocess_data.py's output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL to the stage-1 (SFT) checkpoint, HF or native}"
: "${DATA:?set DATA to the output of tools/preprocess_data.py}"
OUT=${OUT:-runs/simpo_1.5b}
NGPU=${NGPU:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
export CUDA_DEVICE_MAX_CONNECTIONS=1  # keep TP/DP communication kernels in issue order

MODEL_ARGS=(--model.path "$MODEL" --model.dtype bf16 --model.recompute selective)
PARALLEL_ARGS=(--parallel.tensor_parallel "${TP:-1}" --parallel.sequence_parallel true --parallel.zero1 true)
DATA_ARGS=(--data.path "$DATA" --data.global_batch 32 --data.micro_batch_tokens 40000)
OUTPUT_ARGS=(--train.output_dir "$OUT" --train.export_hf "$OUT/hf" --checkpoint.every 200 --checkpoint.keep 3)

torchrun --nproc-per-node "$NGPU" -m megatron_redi.train --config "${CONFIG:-examples/configs/simpo_1.5b.yaml}" \
    "${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${DATA_ARGS[@]}" "${OUTPUT_ARGS[@]}" "$@"
