#!/usr/bin/env bash
# The paper's Table 1 recipe in one command, on one node (on several under SLURM: examples/slurm_redi.sbatch
# runs this script; inside a SLURM job training and evaluation run on every node): Qwen2.5-Math-1.5B -> SFT 5 epochs on D_SFT ->
# REDI 1 epoch on D_Pref (a checkpoint every 200 steps) -> every kept checkpoint on MATH-500 by the
# intermediate protocol, the best named -> the best on the five benchmarks by the final protocol ->
# a row in the shape of Table 1 beside the paper's own.
#
#   bash examples/run_redi_1.5b.sh
#
# Each stage has its own directory under OUT and is skipped once complete; killed or preempted
# anywhere, the same command continues where it stopped. A stage whose config or inputs changed is
# refused, with the way out. Variables (all optional):
#   MODEL=Qwen2.5-Math-1.5B  RAW=OpenR1-Math-Raw  BENCH=benchmarks   local directories: the base model,
#                            the raw traces, the benchmarks as NAME.jsonl (missing ones: exit 2 with
#                            the download commands)
#   OUT=runs/redi_1.5b       the run           NGPU=(nvidia-smi's count; per node)   WORKERS=16 (preprocessing)
#   SFT=DIR                  start stage 2 from an existing stage-1 model (the sft stage is left out)
#   STAGES=data,sft          run only these (data, sft, redi, redi_select, redi_final, table)
#   STUDENT=llama-3.2-3b | qwen2.5-math-7b    Table 4's students (their configs of configs/paper/;
#                            TOKENIZER=DIR: a tokenizer with a chat template for a base model without one)
#   STUDENT=qwen3-1.7b | qwen3-4b | qwen3-8b  Qwen3 bases (Qwen3-*-Base), the 1.5B hyperparameters carried
#                            over untuned; their own chat template, "<think>" forced; no paper row beside
#   DRY_RUN=1                print the plan and every command, run nothing
#   TOY=1                    the same recipe at toy scale on CPU (tiny model, synthetic corpus and
#                            benchmarks, 2 processes, configs/toy/): a few minutes, what CI runs
# Hyperparameters live in the YAML files of examples/configs/paper/ (evaluation.yaml: the protocols).
set -euo pipefail
exec python -m megatron_redi.recipe table1 --root "$(cd "$(dirname "$0")/.." && pwd)" "$@"
