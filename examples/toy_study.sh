#!/usr/bin/env bash
# The toy study of docs/toy_study.md on CPU: both tasks, each with its stage 1, its four kinds of
# negatives and the stage-2 grid (alpha 0 / 0.8 / 1.0 per kind and more SFT, 3 learning rates,
# 3 seeds), two one-process runs at a time. Rerunning resumes: finished steps are kept.
#
#   bash examples/toy_study.sh [OUT_DIR]        (default runs/toy_study; about 45 minutes per task on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/toy_study}
for task in addition decoy; do
    echo "== task $task"
    python tools/toy_study.py --task "$task" --output "$OUT/$task"
done
echo "== the registered test of the explanation (alpha 0.8 - alpha 0: decoys against slips)"
python tools/toy_study.py --mechanism "$OUT/addition/results.json" "$OUT/decoy/results.json" | tee "$OUT/mechanism.md"
