#!/usr/bin/env bash
# Everything that needs a GPU, in one run: the CUDA tests, the throughput, attention, log-prob and
# generation benchmarks, the trainer on the toy task (each loss trained, resumed and evaluated).
# Steps are independent, each under its own time limit, the most wanted first (the CUDA tests
# before anything optional), so that a failure or a hang costs only its own step; a global
# deadline skips, and says so, what would start too late to finish.
#
#   bash tools/gpu_check.sh              every step, on a machine with one NVIDIA GPU (H100 / H200)
#   bash tools/gpu_check.sh --quick      the steps a lent GPU's minutes allow (CUDA tests, 2 x 8192
#                                        throughput, the head at 16k tokens, the toy losses, 4 ranks
#                                        on the one GPU), within a deadline of 8 min: one 10-minute
#                                        call with room to spare
#   bash tools/gpu_check.sh --dry-run    the same steps with the same tools and flags at toy sizes on
#                                        CPU (tests/tools/test_gpu_check.py runs --quick --dry-run, so
#                                        the script cannot drift from the tools' flags); nothing built
#   ONLY='throughput' bash tools/gpu_check.sh    only the steps whose names match (a regex, searched
#       in each name: cuda_tests_triton, cuda_tests_extension, throughput_8192 / 4096 / 16384 / 19000,
#       attention_pair, attention_uneven, logprob_16k, toy_data, toy_redi / symmetric / dpo / simpo /
#       sft, toy_eval, multirank_shared_gpu, context_parallel, generation_1.5b, generation_batching,
#       checkpoint_stall, logprob_65k; the build always runs)
#   DEADLINE=SECONDS                     the global deadline from the start (--quick: 480; else none)
#
# Results in $OUT (default ./gpu_results): summary.txt (each step's outcome, wall time and the end
# of its log), logs.txt (every log in full), results.jsonl (one JSON object per benchmark),
# steps.jsonl (each step: name, exit code and seconds, or why it was skipped).
# The GPU machine of this project has torch, Triton, transformers, safetensors, tokenizers and
# pytest but no package registry. Nothing is pip-installed: the package runs from this checkout
# (PYTHONPATH), its CUDA extension built in place once (csrc/ -> megatron_redi/_logprob_cuda*.so,
# object files kept in build/), and rebuilt only when csrc/ changes. Wheels found in .whl/ are
# installed after the CUDA tests (liger-kernel, for --compare hf-liger: see docs/performance.md).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0 QUICK=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        --quick) QUICK=1 ;;
        *) echo "usage: bash tools/gpu_check.sh [--quick] [--dry-run]" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-gpu_results}
WORK=$(mktemp -d)
mkdir -p "$OUT"
# the package from this checkout, in every process the steps start (torchrun's ranks included)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
summary="$OUT/summary.txt" logs="$OUT/logs.txt" results="$OUT/results.jsonl" steps="$OUT/steps.jsonl"
: > "$summary"; : > "$logs"; : > "$results"; : > "$steps"
ONLY=${ONLY:-.}  # a regex: run only the steps whose names match (the build always runs)
START=$(date +%s)
DEADLINE=${DEADLINE:-$([ $QUICK = 1 ] && echo 480 || echo 0)}  # seconds from the start; 0: none
MIN_START=20  # a step with less time than this left is skipped: it could show nothing
step() {  # step NAME SECONDS COMMAND...: run under a time limit, log, record the outcome
    local name=$1 limit=$2; shift 2
    [[ $name =~ ^(wheels|build)$ || $name =~ $ONLY ]] || return 0
    if [ "$DEADLINE" -gt 0 ]; then  # within the global deadline, or skipped and said so
        local left=$(( START + DEADLINE - $(date +%s) ))
        if [ $left -lt $MIN_START ]; then
            echo "== $name: skipped, ${left} s left of the ${DEADLINE} s deadline" | tee -a "$summary"
            echo "{\"step\": \"$name\", \"skipped\": \"deadline\", \"seconds_left\": $left}" >> "$steps"
            return 0
        fi
        [ $left -lt "$limit" ] && limit=$left
    fi
    local t0=$(date +%s) sampler=
    if [ $DRY = 0 ] && command -v nvidia-smi > /dev/null; then  # the card's clock and power meanwhile:
        # a sustained step may run at lower clocks than short timings (power cap); this shows it
        nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 200 > "$WORK/$name.clocks" &
        sampler=$!
    fi
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    [ -n "$sampler" ] && kill $sampler 2> /dev/null && wait $sampler 2> /dev/null
    local seconds=$(( $(date +%s) - t0 ))
    echo "== $name: rc=$rc, $seconds s" | tee -a "$summary"
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $seconds, \"limit\": $limit}" >> "$steps"
    [ -s "$WORK/$name.clocks" ] && python tools/clock_summary.py "$WORK/$name.clocks" | tee -a "$summary" >> "$logs"
    { echo "== $name: rc=$rc"; cat "$WORK/$name.log"; } >> "$logs"
    grep -v "^\s*$" "$WORK/$name.log" | tail -"${TAIL:-12}" >> "$summary"
    [ -f "$WORK/$name.json" ] && { python -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" \
        "$WORK/$name.json" >> "$results"; }
    return 0
}
full_only() { [ $QUICK = 0 ]; }  # the steps --quick leaves out

# Sizes: the real ones, or toy ones on CPU for --dry-run (the same tools and flags either way).
if [ $DRY = 1 ]; then
    PRESET=tiny BENCH_EXTRA="--prompt-len 32 --steps 2 --warmup 1" PROFILE=5
    L4K=128 L8K=256 L16K=512 L19K=600
    PAIR=96,96 UNEVEN=32,160 ATTN_SHAPE="--heads 4 --kv-heads 2 --head-dim 16"
    HEAD_SHAPE="--hidden 128 --vocab 4096 --repeats 1" HEAD_TOKENS=1024 HEAD_LONG=2048
    HEAD_CHUNKS=64,256 HEAD_PATHS=naive,single-pass/pytorch@64,single-pass/pytorch@256
    GEN_SHAPE="--preset tiny --batch 4 --new-tokens 32" TOY_ROWS=200 CP_TOKENS=256
    BATCHING_SHAPE="--preset tiny --jobs 16 --batch 4 --new-tokens 32 --repeats 1"
else
    PRESET=qwen2.5-1.5b BENCH_EXTRA= PROFILE=60
    L4K=4096 L8K=8192 L16K=16384 L19K=19000
    PAIR=8192,8192 UNEVEN=3072,13312 ATTN_SHAPE=
    HEAD_SHAPE= HEAD_TOKENS=16384 HEAD_LONG=65536 HEAD_CHUNKS=441,1765,3530,7060
    HEAD_PATHS=naive,single-pass/cuda-extension@441,single-pass/cuda-extension@1765,single-pass/cuda-extension@3530,single-pass/cuda-extension@7060,two-pass/cuda-extension@3530,single-pass/triton@3530
    GEN_SHAPE="--preset qwen2.5-1.5b --batch 32 --new-tokens 512" TOY_ROWS=600 CP_TOKENS=32768
    BATCHING_SHAPE="--preset qwen2.5-1.5b --jobs 512 --batch 64 --new-tokens 1024 --repeats 1"
fi
bench="python tools/benchmark_throughput.py --preset $PRESET $BENCH_EXTRA"

CUDA_TESTS="tests/model/test_fast_path_cuda.py tests/ops/test_triton_kernels.py tests/parallel/test_collectives.py
    tests/parallel/test_context_parallel.py tests/training/test_async_checkpoints.py"  # the files with CUDA tests, named: no other file's import can stop them
if [ $DRY = 0 ]; then
    { nvidia-smi; python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"; } >> "$logs" 2>&1
    # Building csrc/ takes a minute of CPU: meanwhile the GPU runs the tests that need no extension.
    # In place, object files kept: a second run (a rerun on the same machine) rebuilds nothing.
    so=$(ls megatron_redi/_logprob_cuda*.so 2> /dev/null | head -1)
    if [ -z "$so" ] || [ csrc/logprob_kernels.cu -nt "$so" ]; then
        MAX_JOBS=${MAX_JOBS:-8} python setup.py -q build_ext --inplace --build-temp build/cuda > "$WORK/build.log" 2>&1 &
    else
        echo "extension up to date: $so" > "$WORK/build.log"; true &
    fi
    builder=$!
fi
step cuda_tests_triton 120 python -m pytest -q -m cuda $CUDA_TESTS
if [ $DRY = 0 ]; then
    t0=$(date +%s); wait $builder; rc=$?
    echo "== build: rc=$rc, waited $(( $(date +%s) - t0 )) s" | tee -a "$summary"
    { echo "== build"; cat "$WORK/build.log"; } >> "$logs"
fi
# on CPU the CUDA tests are skipped, whatever MEGATRON_REDI_EXPECT_CUDA_EXT says
step cuda_tests_extension 120 env MEGATRON_REDI_EXPECT_CUDA_EXT=1 python -m pytest -q -m cuda tests/ops/test_logprob_cuda.py
if [ $DRY = 0 ] && ls .whl/*.whl > /dev/null 2>&1; then
    step wheels 60 python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
fi
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
TAIL=75 bench_step throughput_8192 150 --seq-len $L8K --compare $compare --profile $PROFILE
full_only && bench_step throughput_4096 120 --seq-len $L4K --compare $compare
full_only && bench_step throughput_16384 120 --seq-len $L16K
full_only && bench_step throughput_19000 120 --seq-len $L19K
# attention for a pair, every way it can be called (the step's attention is slower than a bare harness's)
full_only && step attention_pair 90 python tools/benchmark_attention.py --seq-lens $PAIR $ATTN_SHAPE \
    --json "$WORK/attention_pair.json"
full_only && step attention_uneven 90 python tools/benchmark_attention.py --seq-lens $UNEVEN $ATTN_SHAPE \
    --json "$WORK/attention_uneven.json"
# the head's chunk size (each chunk rereads and rewrites the fp32 weight-gradient accumulator)
step logprob_16k 120 python tools/benchmark_logprob.py --tokens $HEAD_TOKENS $HEAD_SHAPE --chunk-tokens $HEAD_CHUNKS \
    --paths $HEAD_PATHS --json "$WORK/logprob_16k.json"
# the trainer's GPU path (bf16 compute, fp32 master weights, the extension) on the toy task: each
# loss trains 2 steps with a checkpoint every 2, then the same run resumes from it to step 4
toy="$WORK/toy"
step toy_data 120 bash -c "python tools/make_synthetic_traces.py --output-dir $toy --rows $TOY_ROWS \
    && python tools/preprocess_data.py --input $toy/traces.jsonl --tokenizer $toy/tokenizer --output-dir $toy/data --no-progress \
    && python tools/make_synthetic_checkpoint.py --preset tiny --output $toy/student"
for loss in redi symmetric dpo simpo sft; do
    stage=pairwise; [ $loss = sft ] && stage=sft
    train="python -m megatron_redi.train --model.path $toy/student --data.path $toy/data --train.stage $stage \
        --loss.type $loss --data.global_batch 8 --optim.lr 1e-3 --checkpoint.every 2 --train.progress false \
        --train.output_dir $toy/run_$loss"
    step "toy_$loss" 90 bash -c "set -o pipefail; $train --train.max_steps 2 \
        && $train --train.max_steps 4 2>&1 | tee $toy/resume_$loss.log \
        && grep -q 'resumed from .*(step 2)' $toy/resume_$loss.log && grep -q '\"step\": 4' $toy/run_$loss/metrics.jsonl"
done
# generation on the GPU (KV cache, the fused QKV + RoPE kernel while decoding) from the REDI run
step toy_eval 90 python tools/evaluate.py --run-dir "$toy/run_redi" --tokenizer "$toy/data/tokenizer" \
    --protocol intermediate_boxed --benchmark "$toy/benchmark.jsonl" --samples 2 --max-problems 50 --max-new-tokens 48 --output "$WORK/toy_eval"
# the CUDA code of a multi-rank run, 4 ranks sharing the GPU over gloo, every collective's device
# checked: TP=2 + SP, DP=2 + ZeRO-1, DPO's pre-pass, SIGTERM to one rank and the resume, evaluations
step multirank_shared_gpu 180 python tools/multirank_check.py --shared-gpu --model "$toy/student" --data "$toy/data" \
    --benchmark "$toy/benchmark.jsonl" --output "$WORK/multirank"
# context parallelism's memory and time per rank for one long sequence, CP ranks sharing the GPU
full_only && step context_parallel 180 env MEGATRON_REDI_SHARED_GPU=1 python tools/benchmark_context_parallel.py \
    --tokens $CP_TOKENS --cp 1 2 4 --output "$WORK/context_parallel.json"
# the evaluator's generator against transformers' static-cache generate, same model and prompts
full_only && step generation_1.5b 240 python tools/benchmark_generation.py $GEN_SHAPE --json "$WORK/generation_1.5b.json"
# continuous against static batching on long-tailed generation lengths (the same tokens both ways)
full_only && step generation_batching 240 python tools/benchmark_generation.py --batching $BATCHING_SHAPE \
    --json "$WORK/generation_batching.json"
# the training's stall per checkpoint, synchronous against asynchronous (2 ranks sharing the GPU, ZeRO-1)
full_only && step checkpoint_stall 300 env MEGATRON_REDI_SHARED_GPU=1 bash -c "python tools/benchmark_checkpoint.py \
    $WORK/checkpoint --preset $PRESET --steps 9 --every 4 --repeats 1 --skip mechanisms \
    && cp $WORK/checkpoint/checkpoint_benchmark.json $WORK/checkpoint_stall.json"
full_only && step logprob_65k 120 python tools/benchmark_logprob.py --tokens $HEAD_LONG $HEAD_SHAPE --repeats 3 --no-naive \
    --json "$WORK/logprob_65k.json"
echo "done; results in $OUT" | tee -a "$summary"
