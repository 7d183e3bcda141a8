#!/usr/bin/env bash
# Everything that needs a GPU, in one run: install (building csrc/), the CUDA tests, the throughput,
# attention, log-prob and generation benchmarks, the trainer on the toy task (each loss trained,
# resumed and evaluated). Steps are independent, each under its own time limit, the most wanted
# first, so that a failure or a hang costs only its own step.
#
#   bash tools/gpu_check.sh              every step, on a machine with one NVIDIA GPU (H100 / H200)
#   bash tools/gpu_check.sh --quick      the steps a lent GPU's minutes allow (CUDA tests, 2 x 8192
#                                        throughput, the head at 16k tokens, the toy losses, 4 ranks
#                                        on the one GPU): under 7 min
#   bash tools/gpu_check.sh --dry-run    the same steps with the same tools and flags at toy sizes on
#                                        CPU (tests/tools/test_gpu_check.py runs --quick --dry-run, so
#                                        the script cannot drift from the tools' flags); nothing installed
#   ONLY='throughput' bash tools/gpu_check.sh    only the steps whose names match (a regex, searched
#       in each name: cuda_tests_triton, cuda_tests_extension, throughput_8192 / 4096 / 16384 / 19000,
#       attention_pair, attention_uneven, logprob_16k, toy_data, toy_redi / symmetric / dpo / simpo /
#       sft, toy_eval, multirank_shared_gpu, context_parallel, generation_1.5b, generation_batching,
#       logprob_65k; install always runs)
#
# Results in $OUT (default ./gpu_results), three files: summary.txt (each step's outcome and the
# end of its log), logs.txt (every log in full), results.jsonl (one JSON object per benchmark).
# The GPU machine of this project has torch, Triton, transformers, safetensors, tokenizers and
# pytest but no package registry: the project is installed with --no-deps. Wheels found in .whl/
# are installed first (liger-kernel, for --compare hf-liger: see docs/performance.md).
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

if [ $DRY = 0 ]; then
    { nvidia-smi; python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"; } >> "$logs" 2>&1
    ls .whl/*.whl > /dev/null 2>&1 && step wheels 60 python -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
    # Building csrc/ takes a minute of CPU: meanwhile the GPU runs the tests that need no extension.
    python -m pip install --no-deps --no-build-isolation -e . > "$WORK/install.log" 2>&1 &
    installer=$!
fi
step cuda_tests_triton 120 env PYTHONPATH=. python -m pytest -q -m cuda tests --ignore=tests/ops/test_logprob_cuda.py
if [ $DRY = 0 ]; then
    wait $installer
    echo "== install: rc=$?" | tee -a "$summary"; { echo "== install"; cat "$WORK/install.log"; } >> "$logs"
fi
# on CPU the CUDA tests are skipped, whatever MEGATRON_REDI_EXPECT_CUDA_EXT says
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
    --benchmark "$toy/benchmark.jsonl" --samples 2 --max-problems 50 --max-new-tokens 48 --output "$WORK/toy_eval"
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
full_only && step logprob_65k 120 python tools/benchmark_logprob.py --tokens $HEAD_LONG $HEAD_SHAPE --repeats 3 --no-naive \
    --json "$WORK/logprob_65k.json"
echo "done; results in $OUT" | tee -a "$summary"
