#!/usr/bin/env python
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
are kept, the rest are computed.
"""

import argparse
import gc
import json
import os
import sys
import time

import torch

from megatron_redi.atomic import atomic_file, check_output, fingerprint
from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.config import COMPUTE_DTYPES, DTYPES, ConfigError, load_json, tokenizer_directory
from megatron_redi.eval import evaluate, load_benchmark, prompt_text, score, vllm_engine
from megatron_redi.eval.rllm_grader import THINK_END
from megatron_redi.eval.runner import benchmark_digest
from megatron_redi.eval.protocol import add_protocol_arguments, protocol_from_arguments
from megatron_redi.eval.selection import best, plot
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize, shutdown
from megatron_redi.training.checkpointing import list_checkpoints

VLLM_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def named_benchmarks(specs: list[str]) -> dict[str, str]:
    named = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or os.path.splitext(os.path.basename(path))[0]
        if name in named:
            raise ConfigError(f"two benchmarks named {name!r}: name them NAME=FILE")
        named[name] = path
    return named


def done_before(summary_file: str, identity: dict) -> dict | None:
    """The summary of an earlier run of this evaluation, or None. One made with another protocol or
    seed, of a checkpoint that has changed since, or of other problems (another file under the same
    name, another --max-problems) is an error: results are never replaced, nor kept for other inputs."""
    if not os.path.exists(summary_file):
        return None
    old = load_json(summary_file, ConfigError)
    changed = [key for key, value in identity.items() if old.get(key) != value]
    if changed:
        raise ConfigError(f"{summary_file}: written with another {' and '.join(changed)} (the checkpoint files "
                          "change when retrained or kept as weights only; the benchmark's digest covers its "
                          "problems, answers and --max-problems); choose another --output")
    return old


@command
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
    digests = {name: benchmark_digest(problems) for name, problems in benchmarks.items()}
    for e in entries:
        tokenizer_directory(args.tokenizer or e["checkpoint"])
        e["benchmarks"], e["identity"] = {}, {}
        files = fingerprint(e["checkpoint"])  # once per checkpoint: it walks the whole directory
        for name in benchmarks:
            e["identity"][name] = {"protocol": protocol.record(), "seed": args.seed, "checkpoint_files": files,
                                   "benchmark_sha256": digests[name]}
            old = done_before(os.path.join(args.output, e["label"], f"{name}.json"), e["identity"][name])
            if old:
                e["benchmarks"][name] = old
    work = [(e["label"], name) for e in entries for name in benchmarks if name not in e["benchmarks"]]
    generations = protocol.samples * sum(len(benchmarks[name]) for _, name in work)
    plan = (f"{len(work)} evaluations to run ({len(entries)} checkpoints x {len(benchmarks)} benchmarks, "
            f"{len(entries) * len(benchmarks) - len(work)} done before), protocol {protocol.record()['name']}: "
            f"{generations:,} generations of up to {protocol.max_new_tokens:,} new tokens "
            f"({generations * protocol.max_new_tokens:,} tokens at most)")
    if args.dry_run:
        print(plan)
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

    report(plan)
    started, done = time.perf_counter(), 0

    for e in entries:
        todo = [name for name in benchmarks if name not in e["benchmarks"]]
        if not todo:
            report(f"{e['label']}: done before, kept")
            continue
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or e["checkpoint"])
        model = from_pretrained(e["checkpoint"], parallel, dtype=DTYPES[args.dtype]).eval() if args.engine == "builtin" \
            else None
        for name in todo:
            if model is not None:
                results, summary = evaluate(model, tokenizer, benchmarks[name], protocol, args.seed, args.batch_size,
                                            progress=not args.no_progress)
            else:
                prompts = [prompt_text(tokenizer, p["problem"], protocol.prompt, protocol.force_think)
                           for p in benchmarks[name]]
                texts, lengths = vllm_engine.generate_texts(e["checkpoint"], args.tokenizer or e["checkpoint"], prompts,
                                                            protocol, args.seed, args.tp, VLLM_DTYPES[args.dtype])
                results, summary = score(benchmarks[name], texts, lengths, protocol)
            summary.update(checkpoint=e["checkpoint"], step=e["step"], benchmark=name, **e["identity"][name])
            if parallel.rank == 0:  # the results first: the summary's presence means both are whole
                with atomic_file(os.path.join(args.output, e["label"], f"{name}.jsonl")) as f:
                    f.writelines(json.dumps(r) + "\n" for r in results)
                with atomic_file(os.path.join(args.output, e["label"], f"{name}.json")) as f:
                    json.dump(summary, f, indent=2)
            e["benchmarks"][name] = summary
            sem = "n/a" if summary["sem"] is None else f"{100 * summary['sem']:.1f}"
            k = summary["samples"]
            report(f"{e['label']} {name}: pass@1 {100 * summary['pass@1']:.1f} ± {sem} (SEM, k={k}), "
                   f"pass@{k} {100 * summary[f'pass@{k}']:.1f}, {summary['problems']} problems")
            if protocol.checker == "rllm" and not any(THINK_END in g for r in results for g in r["generations"]):
                report(f"warning: no generation of {e['label']} on {name} wrote {THINK_END}, after which alone the "
                       "rllm grader reads an answer: all count as wrong (for a model that does not think first, "
                       "--checker math-verify)")
            done += k * summary["problems"]
            if done < generations:  # the whole campaign's time left, at the pace so far
                left = (time.perf_counter() - started) / done * (generations - done)
                report(f"{generations - done:,} generations left: about {left / 60:.0f} min at the pace so far")
        del model
        gc.collect()

    chosen = best(entries, args.select_by)
    if parallel.rank == 0:
        compact = [{"label": e["label"], "checkpoint": e["checkpoint"], "step": e["step"],
                    "benchmarks": {n: {k: s[k] for k in ("pass@1", "sem", f"pass@{s['samples']}", "samples", "problems")}
                                   for n, s in e["benchmarks"].items()}} for e in entries]
        with atomic_file(os.path.join(args.output, "summary.json")) as f:
            json.dump({"protocol": protocol.record(), "seed": args.seed, "checkpoints": compact, "best": chosen}, f,
                      indent=2)
        if sum(e["step"] is not None for e in entries) >= 2:
            plot(entries, chosen, os.path.join(args.output, "curve.png"))
    if len(entries) > 1:
        report(f"best: {chosen['label']} (step {chosen['step']}), {100 * chosen['score']:.1f} by {chosen['selected_by']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutdown()  # on every exit path: torchrun's ranks leave the process group before they end
