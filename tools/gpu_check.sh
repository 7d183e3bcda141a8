#!/usr/bin/env bash
# Everything that needs a GPU, in one run: install (building csrc/), the throughput and log-prob
# benchmarks, the CUDA tests, the trainer on the toy task. Steps are independent, each under its
# own time limit, the most wanted first, so that a failure or a hang costs only its own step.
#
#   bash tools/gpu_check.sh              on a machine with one NVIDIA GPU (H100 / H200)
#   bash tools/gpu_check.sh --dry-run    the same steps at toy sizes on CPU, to check the script
#   ONLY='throughput' bash tools/gpu_check.sh    only the steps whose names match (a regex, searched
#       in each name: cuda_tests_triton, cuda_tests_extension, throughput_8192 / 4096 / 16384 / 19000,
#       attention_pair, attention_uneven, logprob_16k, toy_data, toy_train_redi / dpo / sft, toy_eval,
#       generation_1.5b, logprob_65k; install always runs)
#
# Results in $OUT (default ./gpu_results), three files: summary.txt (each step's outcome and the
# end of its log), logs.txt (every log in full), results.jsonl (one JSON object per benchmark).
# The GPU machine of this project has torch, Triton, transformers, safetensors, tokenizers and
# pytest but no package registry: the project is installed with --no-deps. Wheels found in .whl/
# are installed first (liger-kernel, for --compare hf-liger: see docs/performance.md).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu_results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
summary="$OUT/summary.txt" logs="$OUT/logs.txt" results="$OUT/results.jsonl"
: > "$summary"; : > "$logs"; : > "$results"
ONLY=${ONLY:-.}  # a regex: run only the steps whose names match (the install always runs)
step() {  # step NAME SECONDS COMMAND...: run under a time limit, log, record the outcome
    local name=$1 limit=$2; shift 2
    [[ $name =~ ^wheels$ || $name =~ $ONLY ]] || return 0
    local t0=$(date +%s) sampler=
    if [ $DRY = 0 ] && command -v nvidia-smi > /dev/null; then  # the card's clock and power meanwhile:
        # a sustained step may run at lower clocks than short timings (power cap); this shows it
        nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 200 > "$WORK/$name.clocks" &
        sampler=$!
    fi
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    [ -n "$sampler" ] && kill $sampler 2> /dev/null && wait $sampler 2> /dev/null
    echo "== $name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$summary"
    [ -s "$WORK/$name.clocks" ] && python tools/clock_summary.py "$WORK/$name.clocks" | tee -a "$summary" >> "$logs"
    { echo "== $name: rc=$rc"; cat "$WORK/$name.log"; } >> "$logs"
    grep -v "^\s*$" "$WORK/$name.log" | tail -"${TAIL:-12}" >> "$summary"
    [ -f "$WORK/$name.json" ] && { python -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" \
        "$WORK/$name.json" >> "$results"; }
    return 0
}
bench="python tools/benchmark_throughput.py --preset qwen2.5-1.5b"

if [ $DRY = 1 ]; then
    step throughput_tiny 300 python tools/benchmark_throughput.py --preset tiny --seq-len 256 --prompt-len 32 \
        --steps 2 --warmup 1 --compare hf --profile 5 --json "$WORK/throughput_tiny.json"
    step attention_tiny 300 python tools/benchmark_attention.py --seq-lens 96,32 --heads 4 --kv-heads 2 --head-dim 16 \
        --json "$WORK/attention_tiny.json"
    step logprob_tiny 300 python tools/benchmark_logprob.py --tokens 1024 --hidden 128 --vocab 4096 --repeats 1 \
        --json "$WORK/logprob_tiny.json"
    step generation_tiny 300 python tools/benchmark_generation.py --preset tiny --new-tokens 32 \
        --json "$WORK/generation_tiny.json"
    step cuda_tests 300 python -m pytest -q -m cuda tests
    echo "done; results in $OUT" | tee -a "$summary"
    exit 0
fi

{ nvidia-smi; python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"; } >> "$logs" 2>&1
ls .whl/*.whl > /dev/null 2>&1 && step wheels 60 python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
# Building csrc/ takes a minute of CPU: meanwhile the GPU runs the tests that need no extension.
python -m pip install --no-deps --no-build-isolation -e . > "$WORK/install.log" 2>&1 &
installer=$!
step cuda_tests_triton 120 env PYTHONPATH=. python -m pytest -q -m cuda tests --ignore=tests/ops/test_logprob_cuda.py
wait $installer
echo "== install: rc=$?" | tee -a "$summary"; { echo "== install"; cat "$WORK/install.log"; } >> "$logs"
step cuda_tests_extension 120 env MEGATRON_REDI_EXPECT_CUDA_EXT=1 python -m pytest -q -m cuda tests/ops/test_logprob_cuda.py
compare=hf
python -c "import liger_kernel" 2>/dev/null && compare=hf-liger
bench_step() {  # NAME SECONDS ARGS...: a throughput run; if it fails, once more without Triton
    local name=$1 limit=$2; shift 2
    step "$name" "$limit" $bench "$@" --json "$WORK/$name.json"
    [ -f "$WORK/$name.json" ] || MEGATRON_REDI_TRITON=0 step "${name}_without_triton" "$limit" $bench "$@" \
        --json "$WORK/${name}_without_triton.json"
}
# Throughput, Qwen2.5-1.5B shapes, against the Hugging Face step in the same process;
# the paper's longest pairs (2 x 19000) on an 80 GB H100 with recompute=auto
TAIL=75 bench_step throughput_8192 150 --seq-len 8192 --compare $compare --profile 60
bench_step throughput_4096 120 --seq-len 4096 --compare $compare
bench_step throughput_16384 120 --seq-len 16384
bench_step throughput_19000 120 --seq-len 19000
# attention for a pair, every way it can be called (the step's attention is slower than a bare harness's)
step attention_pair 90 python tools/benchmark_attention.py --seq-lens 8192,8192 --json "$WORK/attention_pair.json"
step attention_uneven 90 python tools/benchmark_attention.py --seq-lens 3072,13312 --json "$WORK/attention_uneven.json"
# the head's chunk size (each chunk rereads and rewrites the fp32 weight-gradient accumulator)
step logprob_16k 120 python tools/benchmark_logprob.py --tokens 16384 --chunk-tokens 441,1765,3530,7060 \
    --paths naive,single-pass/cuda-extension@441,single-pass/cuda-extension@1765,single-pass/cuda-extension@3530,single-pass/cuda-extension@7060,two-pass/cuda-extension@3530,single-pass/triton@3530 \
    --json "$WORK/logprob_16k.json"
# the trainer's GPU path (bf16 compute, fp32 master weights, the extension) on the toy task
toy="$WORK/toy"
step toy_data 120 bash -c "python tools/make_synthetic_traces.py --output-dir $toy --rows 600 \
    && python tools/preprocess_data.py --input $toy/traces.jsonl --tokenizer $toy/tokenizer --output-dir $toy/data --no-progress \
    && python tools/make_synthetic_checkpoint.py --preset tiny --output $toy/student"
for loss in redi dpo sft; do
    stage=pairwise; [ $loss = sft ] && stage=sft
    step "toy_train_$loss" 90 python -m megatron_redi.train --model.path "$toy/student" --data.path "$toy/data" \
        --train.stage $stage --loss.type $loss --train.max_steps 10 --train.output_dir "$toy/run_$loss" \
        --optim.lr 1e-3 --train.progress false
done
# generation on the GPU (KV cache, the fused QKV + RoPE kernel while decoding) from the REDI run
step toy_eval 90 python tools/evaluate.py --run "$toy/run_redi" --tokenizer "$toy/data/tokenizer" \
    --benchmark "$toy/benchmark.jsonl" --samples 2 --max-problems 50 --max-new-tokens 48 --output "$WORK/toy_eval"
# the evaluator's generator against transformers' static-cache generate, same model and prompts
step generation_1.5b 240 python tools/benchmark_generation.py --preset qwen2.5-1.5b --batch 32 --new-tokens 512 \
    --json "$WORK/generation_1.5b.json"
step logprob_65k 120 python tools/benchmark_logprob.py --tokens 65536 --repeats 3 --no-naive --json "$WORK/logprob_65k.json"
echo "done; results in $OUT" | tee -a "$summary"
