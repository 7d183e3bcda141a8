#!/usr/bin/env bash
# Stage 1 of the paper (Appendix C.3) as its reference ran it: SFT of Qwen2.5-Math-1.5B on the
# correct traces, RoPE theta raised to 300,000 with 32,768 positions (the base has 4,096), lr 5e-5,
# 128 sequences per step, 5 epochs, sequences up to 32,768 tokens; one node of 8 GPUs.
#
#   MODEL=Qwen2.5-Math-1.5B DATA=data/redi OUT=runs/sft_1.5b bash examples/run_sft_1.5b.sh [--section.key value ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)  # paths the user gives stay relative to where they run this
: "${MODEL:?set MODEL to the base model directory (HF), e.g. a local copy of Qwen2.5-Math-1.5B}"
: "${DATA:?set DATA to the output of tools/preprocess_data.py}"
OUT=${OUT:-runs/sft_1.5b}
NGPU=${NGPU:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
export CUDA_DEVICE_MAX_CONNECTIONS=1

MODEL_ARGS=(--model.path "$MODEL" --model.dtype bf16 --model.recompute auto
            --model.rope_theta 300000 --model.max_position_embeddings 32768)
PARALLEL_ARGS=(--parallel.tensor_parallel "${TP:-1}" --parallel.sequence_parallel true --parallel.zero1 true)
DATA_ARGS=(--data.path "$DATA" --data.global_batch 128 --data.micro_batch_tokens 32768)
OUTPUT_ARGS=(--train.output_dir "$OUT" --train.export_hf "$OUT/hf" --train.export_overwrite true --checkpoint.every 500 --checkpoint.keep 3)

torchrun --nproc-per-node "$NGPU" -m megatron_redi.train --config "$here/configs/sft_1.5b.yaml" \
    "${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${DATA_ARGS[@]}" "${OUTPUT_ARGS[@]}" "$@"
