#!/usr/bin/env bash
# The toy recipe on tools/local_slurm.sh's two-node cluster, through examples/slurm_redi.sbatch:
#
#   bash tools/benchmark_multinode.sh WORKDIR     (about 13 minutes on 2 cores; needs slurm-wlm and munge)
#
# the wall time of 1 node x 2 processes against 2 nodes x 1 process (A B A B), then a 2 x 2 run
# stopped by scancel --signal=TERM in its REDI stage: the time to the stop checkpoint, to the
# requeue, and from the requeued job's start to its first new step. Results: docs/measurements/.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: bash tools/benchmark_multinode.sh WORKDIR}
mkdir -p "$work"
eval "$(bash tools/local_slurm.sh start "$work/cluster")"
trap 'bash tools/local_slurm.sh stop "$work/cluster"' EXIT
finished() { ! squeue -h -j "$1" 2>/dev/null | grep -q .; }
for round in 1 2; do
    for layout in "1 2" "2 1"; do
        set -- $layout
        name=${1}x${2}_$round
        job=$(TOY=1 NPROC=$2 OUT=$work/$name sbatch --parsable --nodes "$1" -o "$work/$name.log" examples/slurm_redi.sbatch)
        until finished "$job"; do sleep 1; done
        echo "$1 node(s) x $2 process(es), round $round: $(grep -a '^== done in' "$work/$name.log")"
        grep -a -o '^== \[[0-9]/6\] [a-z_]*: done in [0-9a-z ]*' "$work/$name.log" | sed 's/^/    /'
    done
done
job=$(TOY=1 NPROC=2 OUT=$work/stop sbatch --parsable --nodes 2 -o "$work/stop.log" examples/slurm_redi.sbatch)
until compgen -G "$work/stop/redi/checkpoints/step_*" >/dev/null; do sleep 0.1; done
before=$(ls "$work/stop/redi/checkpoints")
t0=$(date +%s.%N)
scancel --signal=TERM "$job"
until [ "$(ls "$work/stop/redi/checkpoints")" != "$before" ]; do sleep 0.05; done
t1=$(date +%s.%N)
until grep -aq "requeueing job" "$work/stop.log"; do sleep 0.05; done
t2=$(date +%s.%N)
until grep -aq "(restart 1)" "$work/stop.log"; do sleep 0.05; done
t3=$(date +%s.%N)
step=$(grep -ao 'after step [0-9]*' "$work/stop.log" | head -1 | grep -o '[0-9]*$')
until python3 -c "import json,sys; sys.exit(0 if max(json.loads(l)['step'] for l in open('$work/stop/redi/metrics.jsonl')) > $step else 1)" 2>/dev/null; do sleep 0.05; done
t4=$(date +%s.%N)
until finished "$job"; do sleep 1; done
python3 - "$t0" "$t1" "$t2" "$t3" "$t4" "$step" <<'PY'
import sys
t0, t1, t2, t3, t4 = map(float, sys.argv[1:6])
print(f"2 x 2, scancel --signal=TERM after the first REDI checkpoint: stopped after step {sys.argv[6]}")
print(f"    signal -> stop checkpoint in place {t1 - t0:.1f} s; -> the job requeueing itself {t2 - t0:.1f} s")
print(f"    requeue -> the requeued job's start {t3 - t2:.1f} s (cred_expire=10, sched_interval=2)")
print(f"    requeued job's start -> its first new REDI step logged {t4 - t3:.1f} s")
PY
grep -a '^== done in' "$work/stop.log" | tail -1 | sed 's/^/    after the requeue: /'
