"""Evaluate checkpoints on benchmarks as the paper did: pass@1 over k samples with its SEM, pass@k,
and, over a run's checkpoints, the curve and the best checkpoint.

    python tools/evaluate.py --checkpoint runs/redi/hf --benchmark math500.jsonl --output eval/redi
    python tools/evaluate.py --run-dir runs/redi --benchmark math500=b/math500.jsonl aime24=b/aime24.jsonl \
        --output eval/redi_curve
    torchrun --nproc-per-node 8 tools/evaluate.py --tp 2 ...     (TP x DP: problems split over DP)

--run-dir (or --run) evaluates every checkpoint kept under RUN/checkpoints (weights-only ones included); --checkpoint
takes one or more HF or native directories (their tokenizer files beside the weights, or
--tokenizer). Benchmarks are JSON lines of {"problem", "answer"} (tools/prepare_benchmarks.py writes
the paper's five), named NAME=FILE or after the file.

The paper's two protocols (Appendix C.5), by --protocol: both sample at temperature 0.6 and top-p
0.95, up to 32,768 new tokens, with the LightEval math prompt inside the chat template and "<think>"
forced as the start of the answer, and take the SEM from the population standard deviation of the
k per-sample scores over sqrt(k), as the reference computed it (--sem-ddof 1: the sample one).
    intermediate  k = 4, math-verify on the last \\boxed{} (the paper's LightEval runs on MATH-500:
                  tuning, figures, the best checkpoint). The default with --run-dir.
    final         k = 16 and pass@16, the rllm grader: the last \\boxed{} after </think>, by the MATH
                  normalisation, then sympy (the paper's tables). The default with --checkpoint.
Every other option changes one setting of the protocol; each summary records the protocol's name
("custom" when changed) and every setting.

OUTPUT gets LABEL/NAME.jsonl (one line per problem with its generations and `correct` list) and
LABEL/NAME.json (pass@1, sem, pass@k, the protocol) per checkpoint and benchmark, and summary.json:
every checkpoint's results and the best one (highest mean pass@1 over the benchmarks, or --select-by
NAME), with curve.png when two or more checkpoints have a training step. Each file appears whole.
Run the same command again after an interruption: results already written with the same protocol
are kept, the rest are computed. (The campaign itself, its layout and its resumption:
megatron_redi/eval/campaign.py.)
"""

import argparse
import os
import sys

import torch

from megatron_redi.atomic import check_output
from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.settings import COMPUTE_DTYPES, DTYPES, ConfigError, tokenizer_directory
from megatron_redi.eval import evaluate, load_benchmark, prompt_text, score, vllm_engine
from megatron_redi.eval.campaign import Campaign, named_benchmarks
from megatron_redi.eval.runner import BenchmarkError, check_gold
from megatron_redi.eval.protocol import add_protocol_arguments, protocol_from_arguments
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize, leaves_the_process_group
from megatron_redi.training.checkpointing import list_checkpoints

VLLM_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


@command
@leaves_the_process_group  # torchrun's ranks leave the process group before they end
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", nargs="+", help="checkpoint directories")
    which.add_argument("--run-dir", "--run", dest="run", metavar="RUN",
                       help="a run directory: every checkpoint under RUN/checkpoints (under torchrun write --run-dir: "
                            "torchrun takes --run for an abbreviation of its own --run-path)")
    p.add_argument("--benchmark", nargs="+", required=True, help="[NAME=]FILE.jsonl, one or more")
    p.add_argument("--output", required=True, help="a directory for the results")
    p.add_argument("--select-by", help="select the best checkpoint by this benchmark's pass@1 (default: the mean)")
    add_protocol_arguments(p)
    p.add_argument("--tokenizer", help="default: each checkpoint's directory")
    p.add_argument("--tp", type=positive_int, default=1)
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default="bf16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-problems", type=positive_int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-minutes", type=float, default=240.0,
                   help="under torchrun: how long a rank may wait for the slowest one's share of a benchmark "
                        "before the run ends (long generations make the shares uneven)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (generations, tokens/s, ETA)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the size of the work, then stop")
    p.add_argument("--engine", choices=("builtin", "vllm"), default="builtin",
                   help="who generates: this package's generator, or vLLM (pip install 'megatron_redi[vllm]'; run "
                        "without torchrun: it uses the visible GPUs, --tp per replica); the scoring is the same")
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    # everything that can be wrong in the inputs, before anything slow
    # a run's checkpoints are compared to pick the best (the intermediate protocol), a checkpoint goes into a table
    protocol = protocol_from_arguments(args, default="intermediate" if args.run else "final")
    entries = list_checkpoints(args.run, args.checkpoint)
    named = named_benchmarks(args.benchmark)
    check_output(args.output, overwrite=True, keep=tuple(named.values()) + tuple(e["checkpoint"] for e in entries)
                 + ((args.tokenizer,) if args.tokenizer else ()))
    benchmarks = {name: load_benchmark(path, args.max_problems) for name, path in named.items()}
    if args.select_by and args.select_by not in benchmarks:
        raise ConfigError(f"--select-by {args.select_by}: not one of the benchmarks ({', '.join(benchmarks)})")
    for name, problems in benchmarks.items():
        try:
            check_gold(problems, protocol)
        except BenchmarkError as e:
            raise BenchmarkError(f"{named[name]}: {e}") from None
    for e in entries:
        tokenizer_directory(args.tokenizer or e["checkpoint"])
    campaign = Campaign(args.output, entries, benchmarks, protocol, args.seed, args.tokenizer)
    if args.dry_run:
        print(campaign.plan())
        return 0
    if args.engine == "vllm":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("--engine vllm runs in one process (vLLM spreads over the GPUs itself): run it without "
                              "torchrun")
        vllm_engine.import_vllm()  # installed, or exit 2 now
    parallel = initialize(tensor_parallel_size=1 if args.engine == "vllm" else args.tp,
                          timeout_minutes=args.timeout_minutes)

    def report(message):
        if parallel.rank == 0:
            print(message, flush=True)

    def open_engine(entry):
        tokenizer_dir = args.tokenizer or entry["checkpoint"]
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if args.engine == "builtin":
            model = from_pretrained(entry["checkpoint"], parallel, dtype=DTYPES[args.dtype]).eval()
            return lambda problems: evaluate(model, tokenizer, problems, protocol, args.seed, args.batch_size,
                                             progress=not args.no_progress)

        def generate(problems):
            prompts = [prompt_text(tokenizer, p["problem"], protocol.prompt, protocol.force_think) for p in problems]
            texts, lengths = vllm_engine.generate_texts(entry["checkpoint"], tokenizer_dir, prompts, protocol,
                                                        args.seed, args.tp, VLLM_DTYPES[args.dtype])
            return score(problems, texts, lengths, protocol)
        return generate

    report(campaign.plan())
    campaign.run(open_engine, writer=parallel.rank == 0, report=report)
    chosen = campaign.finish(args.select_by, writer=parallel.rank == 0)
    if len(entries) > 1:
        report(f"best: {chosen['label']} (step {chosen['step']}), {100 * chosen['score']:.1f} by {chosen['selected_by']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
