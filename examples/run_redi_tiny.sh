#!/usr/bin/env bash
# The embedded default: the paper's whole recipe at toy scale, on CPU, TP=2 over 2 processes.
#
#   bash examples/run_redi_tiny.sh [OUT_DIR]        (default runs/tiny; 6 to 9 minutes on 2 cores)
#
# 1. synthetic teacher traces (digit-by-digit additions; some teacher traces carry a planted slip),
#    a tokenizer, and a held-out benchmark;  2. preprocessing into D_SFT and D_Pref;
# 3. stage 1: SFT of a tiny random Qwen2;  4. stage 2 from the SFT model, all at one learning rate:
#    more SFT, REDI alpha 0 (the same pairs' chosen traces without the negative term: the control the
#    paper lacks), REDI (alpha 0.8) and symmetric REDI (alpha 1.0), a rate high enough for the
#    symmetric run to collapse (the paper's Figure 6 contrast);  5. evaluation of every model (pass@1 over 4
#    samples with its SEM) as a table like the paper's Table 2, the Figure 6 plot, and an HF export
#    that transformers loads. Results are what this toy shows, whatever it shows.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/tiny}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
NPROC=${NPROC:-2}
TP=${TP:-2}

DATA_ARGS=(--rows 4000 --benchmark-problems 200 --digits 5 --seed 0)
STAGE2_LR=${STAGE2_LR:-2.0e-5}
# the paper's sampling, with the toy's chat prompt (its student never saw LightEval's or "<think>") and
# math-verify (the final protocol's rllm grader reads only what follows "</think>", which the toy never writes)
EVAL_ARGS=(--benchmark "toy=$OUT/data/benchmark.jsonl" --samples 4 --temperature 0.6 --top-p 0.95
           --max-new-tokens 72 --max-problems 200 --batch-size 200 --prompt chat --no-force-think
           --checker math-verify)

train() {  # train NAME CONFIG [overrides...]
    local name=$1 config=$2; shift 2
    echo "== $name"
    rm -rf "${OUT:?}/$name"  # the demo's own run directory: each demo run starts afresh
    # one progress line (rank 0) with loss and LogPS, the collapse alarm when it fires, any error in full
    torchrun --nproc-per-node "$NPROC" -m megatron_redi.train --config "$config" \
        --parallel.tensor_parallel "$TP" --data.path "$OUT/data/tokenized" --train.output_dir "$OUT/$name" \
        --checkpoint.resume false "$@"
}

latest() { ls -d "$1"/checkpoints/step_* | sort | tail -1; }

evaluate() {  # evaluate NAME CHECKPOINT
    rm -rf "${OUT:?}/eval/$1"  # the demo's own results: evaluate.py would keep an earlier demo's
    python tools/evaluate.py --checkpoint "$2" --tokenizer "$OUT/data/tokenized/tokenizer" "${EVAL_ARGS[@]}" \
        --output "$OUT/eval/$1" | sed "s/^/   $1: /"
}

start=$(date +%s)
mkdir -p "$OUT/eval"
echo "== data"
python tools/make_synthetic_traces.py --output-dir "$OUT/data" "${DATA_ARGS[@]}"
python tools/preprocess_data.py --input "$OUT/data/traces.jsonl" --tokenizer "$OUT/data/tokenizer" \
    --output-dir "$OUT/data/tokenized" --overwrite
python tools/make_synthetic_checkpoint.py --preset tiny --dtype fp32 --output "$OUT/student"

train sft examples/configs/sft_tiny.yaml --model.path "$OUT/student"
SFT=$(latest "$OUT/sft")

STAGE2=(--model.path "$SFT" --eval.benchmark "$OUT/data/benchmark.jsonl")
train more_sft examples/configs/sft_tiny.yaml --model.path "$SFT" --optim.lr "$STAGE2_LR" --train.epochs 3
train redi_a0 examples/configs/redi_tiny.yaml "${STAGE2[@]}" --optim.lr "$STAGE2_LR" --loss.alpha 0
train redi_a0.8 examples/configs/redi_tiny.yaml "${STAGE2[@]}" --optim.lr "$STAGE2_LR" --loss.alpha 0.8
train redi_a1.0 examples/configs/redi_tiny.yaml "${STAGE2[@]}" --optim.lr "$STAGE2_LR" --loss.type symmetric

echo "== evaluation (pass@1 over 4 samples at temperature 0.6, top-p 0.95; 200 held-out problems)"
evaluate sft_start "$SFT"
for run in more_sft redi_a0 redi_a0.8 redi_a1.0; do
    evaluate "$run" "$(latest "$OUT/$run")"
done
python tools/summary_table.py --output "$OUT/table.md" \
    "SFT start=$OUT/eval/sft_start" \
    "more SFT (lr $STAGE2_LR)=$OUT/eval/more_sft" \
    "REDI alpha 0, the control (lr $STAGE2_LR)=$OUT/eval/redi_a0" \
    "REDI alpha 0.8 (lr $STAGE2_LR)=$OUT/eval/redi_a0.8" \
    "symmetric REDI alpha 1.0 (lr $STAGE2_LR)=$OUT/eval/redi_a1.0"
python tools/plot_metrics.py "$OUT/redi_a0" "$OUT/redi_a0.8" "$OUT/redi_a1.0" \
    --labels "REDI alpha 0, lr $STAGE2_LR" "REDI alpha 0.8, lr $STAGE2_LR" "symmetric REDI alpha 1.0, lr $STAGE2_LR" --smooth 5 --output "$OUT/figure6.png"

echo "== HF export of REDI alpha 0.8"
python tools/convert_checkpoint.py native-to-hf --input "$(latest "$OUT/redi_a0.8")" --output "$OUT/hf_redi" \
    --dtype fp32 --overwrite --no-progress
python - "$OUT/hf_redi" <<'PY'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
model, tok = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1])
print(f"   transformers loads {sys.argv[1]}: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tok)}")
PY
echo "== done in $(( $(date +%s) - start )) s: $OUT/table.md, $OUT/figure6.png, $OUT/hf_redi"
