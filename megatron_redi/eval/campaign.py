"""A resumable evaluation campaign: checkpoints x benchmarks under one protocol, written to one directory.

tools/evaluate.py is its command line; tools/analyze.py reads what it writes:

    OUTPUT/LABEL/NAME.jsonl   one line per problem: its generations, lengths, answers, ``correct``
    OUTPUT/LABEL/NAME.json    the summary: pass@1, sem, pass@k, the protocol, and the identity of
                              the evaluation (protocol, seed, the checkpoint's files, the tokenizer's
                              files with its chat template, the benchmark's digest); written after the
                              .jsonl, so its presence means both are whole
    OUTPUT/summary.json       every checkpoint's results and the best one
    OUTPUT/curve.png          with two or more checkpoints that have a training step

A rerun keeps every evaluation whose summary exists with the same identity and computes the rest;
one with another identity is an error (results are never replaced, nor kept for other inputs).
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Callable

from ..atomic import atomic_file, content_digest, fingerprint
from ..settings import TOKENIZER_FILES, ConfigError, load_json
from .rllm_grader import THINK_END
from .runner import benchmark_digest
from .selection import best, plot


def results_file(output: str, label: str, benchmark: str) -> str:
    return os.path.join(output, label, f"{benchmark}.jsonl")


def summary_file(output: str, label: str, benchmark: str) -> str:
    return os.path.join(output, label, f"{benchmark}.json")


def named_benchmarks(specs: list[str]) -> dict[str, str]:
    """``[NAME=]FILE`` -> {name: file}, a name defaulting to the file's."""
    named = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or os.path.splitext(os.path.basename(path))[0]
        if name in named:
            raise ConfigError(f"two benchmarks named {name!r}: name them NAME=FILE")
        named[name] = path
    return named


# the files of a tokenizer that shape a prompt: its vocabulary, its settings, its chat template
PROMPT_FILES = TOKENIZER_FILES + ("special_tokens_map.json", "chat_template.jinja", "chat_template.json", "merges.txt")


def tokenizer_digest(directory: str) -> str:
    """What the prompts are made with: the content of the tokenizer's files (atomic.content_digest)."""
    return "+".join(f"{name}:{content_digest(os.path.join(directory, name))}" for name in PROMPT_FILES
                    if os.path.isfile(os.path.join(directory, name)))


def done_before(path: str, identity: dict) -> dict | None:
    """The summary of an earlier run of this evaluation, or None. One made with another protocol or
    seed, of a checkpoint that has changed since, with another tokenizer or chat template, or of
    other problems (another file under the same name, another --max-problems) is an error."""
    if not os.path.exists(path):
        return None
    old = load_json(path, ConfigError)
    if not isinstance(old, dict):
        raise ConfigError(f"{path}: not an evaluation summary (a JSON {type(old).__name__}); choose another --output")
    changed = [key for key, value in identity.items() if old.get(key) != value]
    if changed:
        raise ConfigError(f"{path}: written with another {' and '.join(changed)} (the checkpoint files "
                          "change when retrained or kept as weights only; the tokenizer's digest covers its "
                          "files and chat template; the benchmark's digest its problems, answers and "
                          "--max-problems); choose another --output")
    return old


class Campaign:
    """``entries``: checkpoints (training.checkpointing.list_checkpoints' dicts: label, checkpoint,
    step); ``benchmarks``: name -> problems; ``tokenizer``: the tokenizer's directory (by default each
    checkpoint's own). Reads what an earlier run left in ``output``."""

    def __init__(self, output: str, entries: list[dict], benchmarks: dict[str, list[dict]], protocol, seed: int,
                 tokenizer: str | None = None):
        self.output, self.entries, self.benchmarks, self.protocol, self.seed = output, entries, benchmarks, protocol, seed
        digests = {name: benchmark_digest(problems) for name, problems in benchmarks.items()}
        for e in entries:
            e["benchmarks"], e["identity"] = {}, {}
            files = fingerprint(e["checkpoint"])  # once per checkpoint: it walks the whole directory
            prompts = tokenizer_digest(tokenizer or e["checkpoint"])
            for name in benchmarks:
                e["identity"][name] = {"protocol": protocol.record(), "seed": seed, "checkpoint_files": files,
                                       "tokenizer_sha256": prompts, "benchmark_sha256": digests[name]}
                old = done_before(summary_file(output, e["label"], name), e["identity"][name])
                if old:
                    e["benchmarks"][name] = old
        self.work = [(e["label"], name) for e in entries for name in benchmarks if name not in e["benchmarks"]]
        self.generations = protocol.samples * sum(len(benchmarks[name]) for _, name in self.work)

    def plan(self) -> str:
        n, p = len(self.entries) * len(self.benchmarks), self.protocol
        return (f"{len(self.work)} evaluations to run ({len(self.entries)} checkpoints x {len(self.benchmarks)} "
                f"benchmarks, {n - len(self.work)} done before), protocol {p.record()['name']}: "
                f"{self.generations:,} generations of up to {p.max_new_tokens:,} new tokens "
                f"({self.generations * p.max_new_tokens:,} tokens at most)")

    def run(self, open_engine: Callable, writer: bool, report: Callable[[str], None]) -> None:
        """Every evaluation not done before. ``open_engine(entry)`` returns, for one checkpoint, a
        function ``(problems) -> (results, summary)`` (None when the checkpoint has nothing left);
        ``writer``: this process writes the files (rank 0)."""
        started, done = time.perf_counter(), 0
        for e in self.entries:
            todo = [name for name in self.benchmarks if name not in e["benchmarks"]]
            if not todo:
                report(f"{e['label']}: done before, kept")
                continue
            engine = open_engine(e)
            for name in todo:
                results, summary = engine(self.benchmarks[name])
                summary.update(checkpoint=e["checkpoint"], step=e["step"], benchmark=name, **e["identity"][name])
                if writer:  # the results first: the summary's presence means both are whole
                    with atomic_file(results_file(self.output, e["label"], name)) as f:
                        f.writelines(json.dumps(r) + "\n" for r in results)
                    with atomic_file(summary_file(self.output, e["label"], name)) as f:
                        json.dump(summary, f, indent=2)
                e["benchmarks"][name] = summary
                report(self._line(e, name, summary, results))
                done += summary["samples"] * summary["problems"]
                if done < self.generations:  # the whole campaign's time left, at the pace so far
                    left = (time.perf_counter() - started) / done * (self.generations - done)
                    report(f"{self.generations - done:,} generations left: about {left / 60:.0f} min at the pace so far")
            del engine
            gc.collect()  # the checkpoint's model leaves memory before the next one loads

    def _line(self, e: dict, name: str, summary: dict, results: list[dict]) -> str:
        sem = "n/a" if summary["sem"] is None else f"{100 * summary['sem']:.1f}"
        k = summary["samples"]
        line = (f"{e['label']} {name}: pass@1 {100 * summary['pass@1']:.1f} ± {sem} (SEM, k={k}), "
                f"pass@{k} {100 * summary[f'pass@{k}']:.1f}, {summary['problems']} problems")
        if self.protocol.checker == "rllm" and not any(THINK_END in g for r in results for g in r["generations"]):
            line += (f"\nwarning: no generation of {e['label']} on {name} wrote {THINK_END}, after which alone the "
                     "rllm grader reads an answer: all count as wrong (for a model that does not think first, "
                     "--checker math-verify)")
        return line

    def finish(self, select_by: str | None, writer: bool) -> dict:
        """The best checkpoint; ``writer`` writes summary.json and the curve."""
        chosen = best(self.entries, select_by)
        if writer:
            compact = [{"label": e["label"], "checkpoint": e["checkpoint"], "step": e["step"],
                        "benchmarks": {n: {k: s[k] for k in ("pass@1", "sem", f"pass@{s['samples']}", "samples",
                                                             "problems")} for n, s in e["benchmarks"].items()}}
                       for e in self.entries]
            with atomic_file(os.path.join(self.output, "summary.json")) as f:
                json.dump({"protocol": self.protocol.record(), "seed": self.seed, "checkpoints": compact, "best": chosen},
                          f, indent=2)
            if sum(e["step"] is not None for e in self.entries) >= 2:
                plot(self.entries, chosen, os.path.join(self.output, "curve.png"))
        return chosen
