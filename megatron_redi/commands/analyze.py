"""The paper's analyses of what training does to a model's outputs, each as a JSON file and a plot.

    generations     Figure 8: mean response length and reflection words ("wait") per generation and
                    per 1,000 tokens, per checkpoint, from a tools/evaluate.py output directory
    entropy         Figure 9: mean per-token entropy of each checkpoint on training pairs' chosen and
                    rejected responses and on its own generations for test problems
    logprob-shift   Figure 10: per vocabulary id, the change of its mean log-prob between two
                    checkpoints against its mean log-prob before, on training pairs' chosen responses,
                    with Pearson's r for ids seen at least once and at least 10 times

    python tools/analyze.py generations eval/redi_curve --benchmark aime24 --output analysis/fig8
    python tools/analyze.py entropy --run runs/redi --data data/tokenized --benchmark b/aime24.jsonl \
        --output analysis/fig9
    python tools/analyze.py logprob-shift --before runs/sft/hf --after runs/redi/checkpoints/step_00001400 \
        --data data/tokenized --output analysis/fig10

Each writes OUTPUT.json and OUTPUT.png. Pairs and test problems are drawn at random (--seed) from the
tokenised data (tools/preprocess_data.py) and a benchmark file; the paper drew 4 of each. Models run
on one device (TP 1), bf16 on a GPU, fp32 on CPU.
"""

import argparse
import json
import sys

import numpy as np
import torch

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.settings import ConfigError, load_json, local_directory, tokenizer_directory
from megatron_redi.data.dataset import DatasetError, TokenizedData
from megatron_redi.eval import build_prompt, generate, load_benchmark
from megatron_redi.eval.analysis import (REFLECTION_WORDS, generation_statistics, pearson, token_statistics,
                                         token_type_logprobs)
from megatron_redi.eval.protocol import add_protocol_arguments, protocol_from_arguments
from megatron_redi.eval.runner import stop_tokens
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize, leaves_the_process_group
from megatron_redi.training.checkpointing import list_checkpoints

DTYPE = torch.bfloat16 if torch.cuda.is_available() else torch.float32
RECOMPUTE_NOISE = 1e-4  # nats: far above fp32's last bits, far below what a training step moves


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, output: str, data: dict) -> None:
    fig.tight_layout()
    with atomic_file(output + ".png", "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    with atomic_file(output + ".json") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {output}.json and {output}.png")


def _x(rows):  # the training step, or the position where a checkpoint has none
    return [r["step"] if r["step"] is not None else i for i, r in enumerate(rows)]


def sample_pairs(data_dir: str, count: int, seed: int):
    pairs = TokenizedData(data_dir).pairs
    if len(pairs) == 0:
        raise DatasetError(f"{data_dir}: no preference pairs")
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=min(count, len(pairs)), replace=False))
    return [pairs[int(i)] for i in chosen]


def generations(args) -> dict:
    summary = load_json(f"{args.eval_dir}/summary.json", ConfigError, missing="not an output of tools/evaluate.py")
    names = list(summary["checkpoints"][0]["benchmarks"])
    name = args.benchmark or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise ConfigError(f"{args.eval_dir}: pick one benchmark with --benchmark ({', '.join(names)})")
    rows = []
    for entry in summary["checkpoints"]:
        with open(f"{args.eval_dir}/{entry['label']}/{name}.jsonl") as f:
            results = [json.loads(line) for line in f]
        rows.append({"label": entry["label"], "step": entry["step"], **generation_statistics(results, args.words)})
    plt, fig, axes = _figure(1 + 2 * len(args.words))
    series = [("mean_tokens", "tokens per generation")]
    series += [s for w in args.words for s in ((f"mean_{w}", f'"{w}" per generation'),
                                                (f"{w}_per_1k_tokens", f'"{w}" per 1,000 tokens'))]
    for ax, (key, title) in zip(axes, series):
        ax.plot(_x(rows), [r[key] for r in rows], marker="o")
        ax.set(title=title, xlabel="training step")
        ax.grid(alpha=0.3)
    _save(plt, fig, args.output, {"benchmark": name, "words": args.words, "checkpoints": rows})
    return rows


def entropy(args) -> dict:
    entries = list_checkpoints(args.run, args.checkpoint)
    pairs = sample_pairs(args.data, args.pairs, args.seed)
    problems = load_benchmark(args.benchmark)
    picked = np.random.default_rng(args.seed).choice(len(problems), size=min(args.problems, len(problems)), replace=False)
    protocol = protocol_from_arguments(args)
    parallel = initialize(tensor_parallel_size=1)
    from transformers import AutoTokenizer

    rows = []
    for e in entries:
        tokenizer_directory(args.tokenizer or e["checkpoint"])
    for e in entries:
        model = from_pretrained(e["checkpoint"], parallel, dtype=DTYPE).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or e["checkpoint"])
        prompts = [build_prompt(tokenizer, problems[int(i)]["problem"], protocol.prompt, protocol.force_think)
                   for i in picked]
        outs = generate(model, prompts, protocol.max_new_tokens, stop_tokens(tokenizer), protocol.temperature,
                        protocol.top_p, seed=args.seed)
        kinds = {"train_chosen": [(c.tokens.tolist(), c.prompt_len) for c, _ in pairs],
                 "train_rejected": [(r.tokens.tolist(), r.prompt_len) for _, r in pairs],
                 "test_generated": [(p + o, len(p)) for p, o in zip(prompts, outs) if o]}
        row = {"label": e["label"], "step": e["step"]}
        for kind, seqs in kinds.items():
            stats = token_statistics(model, [s for s, _ in seqs], [start for _, start in seqs]) if seqs else []
            values = np.concatenate([h for _, h in stats]) if stats else np.zeros(0)
            row[kind] = float(values.mean()) if len(values) else None
            row[f"{kind}_tokens"] = int(len(values))
        rows.append(row)
        print(f"{e['label']}: " + ", ".join(f"{k} {row[k]:.3f}" for k in kinds if row[k] is not None), flush=True)
        del model
    plt, fig, axes = _figure(1)
    for kind in ("train_chosen", "train_rejected", "test_generated"):
        axes[0].plot(_x(rows), [r[kind] for r in rows], marker="o", label=kind)
    axes[0].set(xlabel="training step", ylabel="mean token entropy (nats)")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    _save(plt, fig, args.output, {"pairs": len(pairs), "problems": len(picked), "protocol": protocol.record(),
                                  "checkpoints": rows})
    return rows


def logprob_shift(args) -> dict:
    pairs = sample_pairs(args.data, args.pairs, args.seed)
    sequences = [c.tokens.tolist() for c, _ in pairs]
    starts = [c.prompt_len for c, _ in pairs]
    responses = [c.tokens[c.prompt_len:] for c, _ in pairs]
    parallel = initialize(tensor_parallel_size=1)
    means = []
    for path in (args.before, args.after):
        model = from_pretrained(local_directory(path, "a checkpoint"), parallel, dtype=DTYPE).eval()
        # the same responses under both models: the ids and their counts are the same twice
        vocab, counts, mean = token_type_logprobs(responses, [lp for lp, _ in token_statistics(model, sequences, starts)])
        means.append(mean)
        del model
    before, delta = means[0], means[1] - means[0]
    # The same model run twice can differ in the last bits (CPU kernels split their sums by the
    # threads they get): a change that small is no change, not a point to correlate.
    delta[np.abs(delta) < RECOMPUTE_NOISE] = 0.0
    result = {"before": args.before, "after": args.after, "pairs": len(pairs), "tokens": int(counts.sum()),
              "token_types": int(len(vocab)), "by_min_count": {}}
    plt, fig, axes = _figure(len(args.min_count))
    for ax, m in zip(axes, args.min_count):
        keep = counts >= m
        r = pearson(before[keep], delta[keep])
        result["by_min_count"][str(m)] = {"token_types": int(keep.sum()), "pearson_r": r}
        ax.scatter(before[keep], delta[keep], s=6, alpha=0.5)
        ax.axhline(0, color="grey", lw=0.8)
        title = f"ids seen >= {m} times: r = " + ("n/a" if r is None else f"{r:.2f}")
        ax.set(title=title, xlabel="mean log-prob before", ylabel="change of mean log-prob")
        ax.grid(alpha=0.3)
    _save(plt, fig, args.output, result)
    for m, v in result["by_min_count"].items():
        print(f"min count {m}: {v['token_types']} token ids, Pearson r {v['pearson_r']}")
    return result


@command
@leaves_the_process_group  # torchrun's ranks leave the process group before they end
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="analysis", required=True)
    g = sub.add_parser("generations", help="Figure 8 from a tools/evaluate.py output", formatter_class=HelpFormatter)
    g.add_argument("eval_dir", help="an --output directory of tools/evaluate.py")
    g.add_argument("--benchmark", help="which of its benchmarks (needed when it has several)")
    g.add_argument("--words", nargs="+", default=list(REFLECTION_WORDS), help="reflection words, whole-word, any case")
    e = sub.add_parser("entropy", help="Figure 9 over checkpoints", formatter_class=HelpFormatter)
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="every checkpoint kept under RUN/checkpoints")
    which.add_argument("--checkpoint", nargs="+", help="checkpoint directories")
    e.add_argument("--benchmark", required=True, help="test problems (JSON lines), for the generations")
    e.add_argument("--problems", type=positive_int, default=4, help="test problems drawn")
    e.add_argument("--tokenizer", help="default: each checkpoint's directory")
    add_protocol_arguments(e, scoring=False)
    s = sub.add_parser("logprob-shift", help="Figure 10 between two checkpoints", formatter_class=HelpFormatter)
    s.add_argument("--before", required=True, help="the checkpoint before training (e.g. the SFT model)")
    s.add_argument("--after", required=True)
    s.add_argument("--min-count", type=positive_int, nargs="+", default=[1, 10], help="one panel per minimum occurrence count")
    for sp, pairs in ((e, 4), (s, 16)):
        sp.add_argument("--data", required=True, help="tokenised data (tools/preprocess_data.py) with pairs")
        sp.add_argument("--pairs", type=positive_int, default=pairs, help="training pairs drawn")
    for sp in (g, e, s):
        sp.add_argument("--output", required=True, help="OUTPUT.json and OUTPUT.png are written")
    for sp in (e, s):
        sp.add_argument("--seed", type=int, default=0, help="which pairs and problems are drawn, and the sampling")
    args = p.parse_args(argv)
    inputs = [getattr(args, name, None) for name in ("eval_dir", "run", "data", "before", "after", "benchmark",
                                                     "tokenizer")] + (getattr(args, "checkpoint", None) or [])
    for suffix in (".json", ".png"):
        check_output(args.output + suffix, overwrite=True, keep=tuple(path for path in inputs if path))
    {"generations": generations, "entropy": entropy, "logprob-shift": logprob_shift}[args.analysis](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
