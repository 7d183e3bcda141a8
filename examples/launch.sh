#!/usr/bin/env bash
# Train one run of the recipe on a node: the YAML config holds every hyperparameter; this passes only
# what differs per machine (model, data, output, and TP or the GPU count when you set them).
#
#   CONFIG=examples/configs/paper/qwen2.5-math-1.5b_redi.yaml MODEL=runs/sft_5ep/hf DATA=data/redi \
#       OUT=runs/redi bash examples/launch.sh [--section.key value ...]
#
# MODEL: an HF or native checkpoint; DATA: tools/preprocess_data.py's output; OUT: the run directory
# (checkpoints, metrics, and the HF export in OUT/hf). TP overrides the config's tensor-parallel size
# and NGPU the processes (default 8). Further --section.key value pairs go to the trainer: they
# override the config, visibly, on your command line. DRY_RUN=1 prints the command instead.
# TORCHRUN_ARGS: torchrun's own arguments for several nodes (examples/slurm_redi.sbatch sets them).
set -euo pipefail
missing=()
for var in CONFIG MODEL DATA OUT; do
    [ -n "${!var:-}" ] || missing+=("$var")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "launch.sh: set ${missing[*]} (CONFIG: a YAML of examples/configs/paper/, MODEL: a checkpoint," \
         "DATA: tools/preprocess_data.py's output, OUT: the run directory)" >&2
    exit 2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
export CUDA_DEVICE_MAX_CONNECTIONS=1  # keep TP/DP communication kernels in issue order
# After a signal torchrun waits this long for its workers (their stop checkpoint) before it kills
# them; its own default, 30 s, is shorter than a large model's save (docs/multinode.md).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-240}

MACHINE_ARGS=(--model.path "$MODEL" --data.path "$DATA" --train.output_dir "$OUT"
              --train.export_hf "$OUT/hf" --train.export_overwrite true)
if [ -n "${TP:-}" ]; then
    MACHINE_ARGS+=(--parallel.tensor_parallel "$TP")
fi
read -ra RENDEZVOUS <<< "${TORCHRUN_ARGS:-}"  # several nodes: examples/slurm_redi.sbatch sets it
cmd=(torchrun "${RENDEZVOUS[@]}" --nproc-per-node "${NGPU:-8}" -m megatron_redi.train --config "$CONFIG" "${MACHINE_ARGS[@]}" "$@")
if [ -n "${DRY_RUN:-}" ]; then
    echo "${cmd[@]}"
    exit 0
fi
exec "${cmd[@]}"
