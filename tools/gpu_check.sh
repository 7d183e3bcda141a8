#!/usr/bin/env bash
# Everything that needs a GPU, in one run: install (building csrc/), the CUDA tests, the benchmarks.
# Results land in $OUT (default ./gpu_results): logs, JSON, and summary.txt.
#
#   bash tools/gpu_check.sh              on a machine with one NVIDIA GPU (H100 / H200)
#   bash tools/gpu_check.sh --dry-run    the same steps at toy sizes on CPU, to check the script
#
# The GPU machine of this project has torch, Triton, transformers, safetensors, tokenizers and
# pytest but no package registry: the project is installed with --no-deps.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
summary="$OUT/summary.txt"
: > "$summary"
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the outcome
    local name=$1; shift
    local t0=$(date +%s)
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$summary"
    tail -25 "$OUT/$name.log" >> "$summary"
    return 0
}

if [ $DRY = 1 ]; then
    step logprob_benchmark python tools/benchmark_logprob.py --tokens 1024 --hidden 128 --vocab 4096 --repeats 1 \
        --json "$OUT/logprob_tiny.json"
    step throughput_tiny python tools/benchmark_throughput.py --preset tiny --seq-len 256 --prompt-len 32 \
        --steps 2 --warmup 1 --compare hf --json "$OUT/throughput_tiny.json"
    step cuda_tests python -m pytest -q -m cuda tests
    exit 0
fi

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step install python -m pip install --no-deps --no-build-isolation -e .
step extension_import python -c "import megatron_redi._logprob_cuda as m; print('built:', m.__file__)"
step cuda_tests env MEGATRON_REDI_EXPECT_CUDA_EXT=1 python -m pytest -q -m cuda tests
# the trainer's GPU path (bf16 compute, fp32 master weights, the extension) on the toy task
toy="$OUT/toy"
step toy_data bash -c "python tools/make_synthetic_traces.py --output-dir $toy --rows 600 \
    && python tools/preprocess_data.py --input $toy/traces.jsonl --tokenizer $toy/tokenizer --output-dir $toy/data --no-progress \
    && python tools/make_synthetic_checkpoint.py --preset tiny --output $toy/student"
for loss in sft redi dpo; do
    stage=pairwise; [ $loss = sft ] && stage=sft
    step "toy_train_$loss" python -m megatron_redi.train --model.path "$toy/student" --data.path "$toy/data" \
        --train.stage $stage --loss.type $loss --train.max_steps 10 --train.output_dir "$toy/run_$loss" \
        --optim.lr 1e-3 --train.progress false
done
step logprob_16k python tools/benchmark_logprob.py --tokens 16384 --json "$OUT/logprob_16k.json"
step logprob_65k python tools/benchmark_logprob.py --tokens 65536 --repeats 3 \
    --no-naive \
    --json "$OUT/logprob_65k.json"
# Throughput, Qwen2.5-1.5B shapes, against the Hugging Face step in the same process (ANCHORS.md).
# liger-kernel is not on the GPU machine: carry its wheel (.whl, see the device tool's README) to
# compare with HF + Liger, the strongest stack users have.
compare=hf
python -c "import liger_kernel" 2>/dev/null && compare=hf-liger
for len in 4096 8192; do
    step "throughput_${len}" python tools/benchmark_throughput.py --preset qwen2.5-1.5b --seq-len $len \
        --compare $compare --json "$OUT/throughput_${len}.json"
done
for len in 16384 19000; do  # the paper's longest pairs: does 2 x 19000 fit (80 GB on an H100)?
    step "throughput_${len}" python tools/benchmark_throughput.py --preset qwen2.5-1.5b --seq-len $len \
        --json "$OUT/throughput_${len}.json"
done
echo "done; results in $OUT" | tee -a "$summary"
