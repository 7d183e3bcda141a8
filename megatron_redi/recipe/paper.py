"""The paper's recipes as pipelines of stages (pipeline.py), each stage one of the project's tools:

    table1 (examples/run_redi_1.5b.sh): a student's Table 1 row
        data -> sft -> redi -> redi_select -> redi_final -> table
    table2 (examples/run_ablations_1.5b.sh): Table 2, the stage-2 objectives from the 3-epoch start
        data -> sft_3ep -> start_final, and for each of redi, symmetric, dpo, simpo:
        LOSS -> LOSS_select -> LOSS_final; then table

data: tools/preprocess_data.py; training: examples/launch.sh with a config of CONFIGS (every
hyperparameter lives there); LOSS_select: tools/evaluate.py over every kept checkpoint of the run
by the intermediate protocol, naming the best; LOSS_final: the best checkpoint on the five
benchmarks by the final protocol, its HF export and the run's Figure 6 panels; table:
tools/summary_table.py beside the paper's own rows. The protocols are CONFIGS/evaluation.yaml.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys
from dataclasses import dataclass
from functools import cached_property

from .. import slurm
from ..settings import load_yaml
from ..eval.protocol import NAMED, Protocol, named
from ..training.checkpointing import checkpoint_dirs
from ..training.metrics import read_metrics
from .pipeline import Command, RecipeError, Stage, duration


@dataclass(frozen=True)
class Student:
    hub: str  # the Hub repository of the base model
    sft: str  # stage-1 config, in CONFIGS
    redi: str  # stage-2 config
    paper: str | None  # the paper's row of the REDI model (None: a student the paper did not train)

    @property
    def row(self) -> str:
        """The label of this run's row in the table."""
        return self.paper or f"{self.hub.split('/')[1]} REDI"


STUDENTS = {
    "qwen2.5-math-1.5b": Student("Qwen/Qwen2.5-Math-1.5B", "qwen2.5-math-1.5b_sft_5ep", "qwen2.5-math-1.5b_redi",
                                 "Qwen-REDI-1.5B"),
    "llama-3.2-3b": Student("meta-llama/Llama-3.2-3B", "llama-3.2-3b_sft", "llama-3.2-3b_redi", "Llama-3.2-3B REDI"),
    "qwen2.5-math-7b": Student("Qwen/Qwen2.5-Math-7B", "qwen2.5-math-7b_sft", "qwen2.5-math-7b_redi",
                               "Qwen2.5-Math-7B REDI"),
    # Qwen3 bases: the paper's 1.5B hyperparameters carried over, not tuned (their configs say so)
    **{f"qwen3-{size}": Student(f"Qwen/Qwen3-{size.upper()}-Base", f"qwen3-{size}_sft", f"qwen3-{size}_redi", None)
       for size in ("1.7b", "4b", "8b")},
}
# Table 2: the 3-epoch start and each stage-2 objective at its best configuration (the paper's row)
ABLATION_START = ("qwen2.5-math-1.5b_sft_3ep", "Qwen-SFT-1.5B-3ep")
ABLATIONS = {"redi": "REDI (alpha 0.8, lr 1e-6)", "symmetric": "Symmetric REDI (alpha 1.0, lr 2e-7)",
             "dpo": "DPO (beta 0.001, lr 2e-7)", "simpo": "SimPO (beta 2, gamma 1, lr 5e-7)"}
PAPER_COUNTS = (77629, 53175)  # D_SFT sequences and D_Pref pairs from OpenR1-Math-Raw (Appendix C.2)
DATA_SUFFIXES = (".parquet", ".jsonl", ".arrow")


@dataclass
class Settings:
    """Where things are and what runs; see the recipe scripts for the variables that set them."""
    root: str  # the repository: tools/ and examples/
    out: str
    model: str
    raw: str
    bench: str
    tokenizer: str
    sft: str | None  # an existing stage-1 model: the sft stage is left out
    ngpu: int
    workers: int
    student: Student
    configs: str  # the directory of the YAML configs (paper/ or toy/)
    toy: bool = False
    every_node: tuple[str, ...] = ()  # inside a SLURM job: what runs a command once on each of its nodes

    def on_every_node(self, argv: list[str], env: dict[str, str]) -> Command:
        """A command run on this node, or on every node of the SLURM job (stopped through SLURM)."""
        if not self.every_node:
            return Command(argv, env)
        return Command([*self.every_node, *argv], env, stop=slurm.stop_job_steps)

    def torchrun(self, argv: list[str], env: dict[str, str]) -> Command:
        """torchrun over this node's NGPU processes, or over every node of the SLURM job (its
        rendezvous from megatron_redi.slurm)."""
        rendezvous = [] if self.every_node else ["--standalone"]
        return self.on_every_node(["torchrun", *rendezvous, "--nproc-per-node", str(self.ngpu), *argv], env)

    def config(self, name: str) -> str:
        return os.path.join(self.configs, name + ".yaml")

    def tool(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.root, "tools", name))

    @property
    def env(self) -> dict[str, str]:
        """What every command of the run gets on top of the caller's environment."""
        return {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"} if self.toy else {}

    @cached_property
    def protocols(self) -> dict[str, dict]:
        """The two evaluation protocols of CONFIGS/evaluation.yaml, read once."""
        path = os.path.join(self.configs, "evaluation.yaml")
        protocols = load_yaml(path, RecipeError)
        if not isinstance(protocols, dict):
            raise RecipeError(f"{path}: expected a mapping of protocols (intermediate, final)")
        for name in ("intermediate", "final"):
            settings = dict(protocols.get(name) or {})
            unknown = set(settings) - {"protocol", "benchmarks", "select_by", "batch_size"} - set(Protocol.__dataclass_fields__)
            if unknown or not settings.get("benchmarks") or settings.get("protocol") not in NAMED:
                raise RecipeError(f"{path}: {name}: unknown keys {sorted(unknown)}, no benchmarks, or a protocol not "
                                  f"one of {', '.join(NAMED)}")
        return protocols


def raw_files(raw: str) -> str | None:
    """The RAW download's data files as one glob (the parquet files of OpenR1-Math-Raw's data/)."""
    for suffix in DATA_SUFFIXES:
        if glob.glob(os.path.join(raw, "data", "*" + suffix)):
            return os.path.join(raw, "data", "*" + suffix)
    return None


# ---- the stages ---------------------------------------------------------------------------------

def data_stage(s: Settings) -> Stage:
    tokenized = os.path.join(s.out, "data", "tokenized")

    def result() -> str:
        with open(os.path.join(tokenized, "report.json")) as f:
            report = json.load(f)
        paper = f"the paper's from OpenR1-Math-Raw: {PAPER_COUNTS[0]:,} and {PAPER_COUNTS[1]:,}"
        return (f"D_SFT {report['sft_rows']:,} sequences, D_Pref {report['pairs']:,} pairs{' of the toy corpus' * s.toy} "
                f"({paper}); {tokenized}, counts by reason in report.json")

    def commands() -> list[Command]:
        pattern = raw_files(s.raw) or os.path.join(s.raw, "data", "*.jsonl" if s.toy else "*.parquet")
        return [Command([sys.executable, s.tool("preprocess_data.py"), "--input", pattern, "--tokenizer", s.tokenizer,
                         "--output-dir", tokenized, "--workers", str(s.workers), "--overwrite"], s.env)]

    return Stage("data", "D_SFT and D_Pref, tokenised (tools/preprocess_data.py)", commands,
                 inputs=(os.path.join(s.raw, "data"), s.tokenizer), result=result)


def training_stage(s: Settings, name: str, config: str, start: str, what: str, start_stage: str | None = None) -> Stage:
    """``start``: the model it starts from, an input of the run, or the HF export of ``start_stage``."""
    run = os.path.join(s.out, name)
    command = s.on_every_node(["bash", os.path.normpath(os.path.join(s.root, "examples", "launch.sh"))],
                              {**s.env, "CONFIG": s.config(config), "MODEL": start, "DATA": _tokenized(s), "OUT": run,
                               "NGPU": str(s.ngpu)})
    return Stage(name, f"{what} ({config})", lambda: [command], inputs=() if start_stage else (start,),
                 configs=(s.config(config),), after=("data",) + ((start_stage,) if start_stage else ()),
                 plan=lambda: training_plan(s, s.config(config), run),
                 result=lambda: f"{run}/hf (HF export); checkpoints {run}/checkpoints, metrics {run}/metrics.jsonl")


def select_stage(s: Settings, run_stage: str) -> Stage:
    p = s.protocols["intermediate"]
    out = os.path.join(s.out, f"{run_stage}_select")
    command = _evaluate(s, ["--run-dir", os.path.join(s.out, run_stage)], p, out)

    def result() -> str:
        best = _summary(out)["best"]
        return (f"best {best['label']} (step {best['step']}), {100 * best['score']:.1f} by {best['selected_by']}; "
                f"{out}/summary.json, curve {out}/curve.png")

    return Stage(f"{run_stage}_select", f"every kept checkpoint of {run_stage} by the intermediate protocol, "
                 "the best named", lambda: [command], inputs=_benchmark_files(s, p), after=("data", run_stage),
                 settings={"protocol": _protocol_settings(p)}, plan=lambda: evaluation_plan(s, p, run_stage),
                 result=result)


def final_stage(s: Settings, name: str, checkpoint, after: tuple[str, ...], run: str | None = None,
                inputs: tuple[str, ...] = ()) -> Stage:
    """The final protocol on ``checkpoint()`` (a function: the best checkpoint is known only once
    its select stage is done), made by the stages ``after`` or an input; for a trained ``run`` also
    its HF export and Figure 6 panels."""
    p = s.protocols["final"]
    out = os.path.join(s.out, name)

    def commands() -> list[Command]:
        best = checkpoint()
        cmds = [_evaluate(s, ["--checkpoint", best], p, out)]
        if run:
            cmds.append(Command([sys.executable, s.tool("convert_checkpoint.py"), "native-to-hf", "--input", best,
                                 "--output", os.path.join(out, "hf"), "--dtype", "bf16", "--overwrite", "--no-progress"],
                                s.env))
            cmds.append(Command([sys.executable, s.tool("plot_metrics.py"), run, "--output",
                                 os.path.join(out, "figure6.png")], s.env))
        return cmds

    def result() -> str:
        entry = _summary(out)["checkpoints"][0]
        scores = ", ".join(f"{n} {100 * r['pass@1']:.1f}" for n, r in entry["benchmarks"].items())
        extra = f"; HF export {out}/hf, Figure 6 panels {out}/figure6.png" if run else ""
        return f"{entry['checkpoint']}: pass@1 {scores}; {out}/summary.json{extra}"

    return Stage(name, f"{'the best checkpoint' if run else 'the start'} on the five benchmarks by the final protocol",
                 commands, inputs=inputs + _benchmark_files(s, p), after=("data",) + after,
                 settings={"protocol": _protocol_settings(p)}, plan=lambda: evaluation_plan(s, p), result=result)


def table_stage(s: Settings, rows: dict[str, str], paper: list[str], what: str) -> Stage:
    """``rows``: label -> the final stage whose results make that row."""
    out = os.path.join(s.out, "table", "table.md")
    command = Command([sys.executable, s.tool("summary_table.py"),
                       *[f"{label}={os.path.join(s.out, stage)}" for label, stage in rows.items()],
                       *(["--paper", *paper] if paper else []), "--output", out], s.env)

    def result() -> str:
        with open(out) as f:
            return f"{out}\n{f.read().rstrip()}"

    return Stage("table", what, lambda: [command], after=tuple(rows.values()), settings={"paper": paper},
                 result=result)


def best_of(s: Settings, select: str):
    def best() -> str:
        try:
            return _summary(os.path.join(s.out, select))["best"]["checkpoint"]
        except (OSError, KeyError, ValueError):
            return f"<the best checkpoint, named by stage {select}>"
    return best


# ---- the recipes --------------------------------------------------------------------------------

def table1(s: Settings) -> list[Stage]:
    st = s.student
    stages = [data_stage(s)]
    start, start_stage = s.sft, None
    if not s.sft:
        stages.append(training_stage(s, "sft", st.sft, s.model, "stage 1: SFT on D_SFT"))
        start, start_stage = os.path.join(s.out, "sft", "hf"), "sft"
    stages += [training_stage(s, "redi", st.redi, start, "stage 2: REDI on D_Pref from the SFT model", start_stage),
               select_stage(s, "redi"),
               final_stage(s, "redi_final", best_of(s, "redi_select"), ("redi_select",), os.path.join(s.out, "redi")),
               table_stage(s, {f"{'toy ' if s.toy else ''}{st.row} (this run)": "redi_final"},
                           [st.paper] if st.paper else [],
                           "a row in the shape of the paper's Table 1" + (", its own row beside" if st.paper else ""))]
    return stages


def table2(s: Settings) -> list[Stage]:
    sft_config, start_row = ABLATION_START
    stages = [data_stage(s)]
    start, start_stage = s.sft, None
    if not s.sft:
        stages.append(training_stage(s, "sft_3ep", sft_config, s.model, "stage 1: SFT on D_SFT, 3 epochs"))
        start, start_stage = os.path.join(s.out, "sft_3ep", "hf"), "sft_3ep"
    stages.append(final_stage(s, "start_final", lambda: start, (start_stage,) if start_stage else (),
                              inputs=() if start_stage else (start,)))
    rows = {f"{start_row} (start, this run)": "start_final"}
    for loss, paper_row in ABLATIONS.items():
        config = sft_config.replace("sft_3ep", loss)
        stages += [training_stage(s, loss, config, start, f"stage 2: {loss} from the 3-epoch model", start_stage),
                   select_stage(s, loss),
                   final_stage(s, f"{loss}_final", best_of(s, f"{loss}_select"), (f"{loss}_select",),
                               os.path.join(s.out, loss))]
        rows[f"{paper_row.split(' (')[0]} (this run)"] = f"{loss}_final"
    paper = [start_row, *ABLATIONS.values()]
    stages.append(table_stage(s, rows, paper, "the paper's Table 2, its own rows beside"))
    return stages


RECIPES = {"table1": table1, "table2": table2}


# ---- plans --------------------------------------------------------------------------------------

def training_plan(s: Settings, config: str, run: str) -> str:
    """Steps and tokens of a training stage, how far it got, and the time left where a throughput
    has been measured (its own, or another training stage's of this run)."""
    from ..data import DatasetError, GlobalBatchSampler, TokenizedData
    from ..training import TrainConfigError, load_config

    if not os.path.exists(os.path.join(_tokenized(s), "meta.json")):
        return "steps and tokens: known once the data stage is done"
    try:
        cfg = load_config(config, ["--model.path", "-", "--data.path", _tokenized(s)])
        data = TokenizedData(_tokenized(s))
    except (TrainConfigError, DatasetError) as e:  # the stage itself will stop on it, naming the field
        return f"no plan: {e}"
    part = data.sft if cfg.train.stage == "sft" else data.pairs
    lengths = part.total_lengths()
    try:  # the trainer's own count of steps
        steps = GlobalBatchSampler(lengths, lengths, cfg.data.global_batch).steps_per_epoch * cfg.train.epochs
    except ValueError as e:  # fewer items than one global batch: the stage will say so
        return f"no plan: {e}"
    tokens = int(lengths.sum()) * cfg.train.epochs
    done = checkpoint_dirs(os.path.join(run, "checkpoints"))
    step = done[0][0] if done else 0
    text = f"{steps:,} steps, {tokens / 1e6:,.1f} M tokens" + (f"; checkpoint at step {step:,}" if step else "")
    rate, where = throughput([run] + sorted(glob.glob(os.path.join(s.out, "*", "metrics.jsonl"))))
    if rate:
        left = tokens * (1 - min(step, steps) / max(steps, 1)) / rate
        text += f"; about {duration(left)} left at {rate:,.0f} tokens/s (measured: {where})"
    return text


def throughput(runs: list[str]) -> tuple[float | None, str]:
    """The median tokens/s of the first of ``runs`` (directories or metrics files) that logged steps."""
    for run in runs:
        try:
            rates = [r["tokens_per_s"] for r in read_metrics(run) if "tokens_per_s" in r]
        except (OSError, ValueError):
            continue
        if rates:
            return statistics.median(rates), os.path.dirname(run) if run.endswith(".jsonl") else run
    return None, ""


def evaluation_plan(s: Settings, p: dict, run: str | None = None) -> str:
    try:
        problems = sum(_count_lines(os.path.join(s.bench, f"{b}.jsonl")) for b in p["benchmarks"])
    except OSError:
        return ""
    protocol = _protocol(p)
    per = protocol.samples * problems
    text = (f"{protocol.samples} samples x {problems:,} problems = {per:,} generations of up to "
            f"{protocol.max_new_tokens:,} tokens")
    if run is None:
        return text
    kept = len(checkpoint_dirs(os.path.join(s.out, run, "checkpoints")))
    return text + (f" per checkpoint, {kept} kept" if kept else " per checkpoint kept")


# ---- helpers ------------------------------------------------------------------------------------

def _tokenized(s: Settings) -> str:
    return os.path.join(s.out, "data", "tokenized")


def _protocol(p: dict) -> Protocol:
    """The Protocol an entry of evaluation.yaml evaluates with: its named one, with its changes."""
    return named(p["protocol"], **{k: v for k, v in p.items() if k in Protocol.__dataclass_fields__})


def _benchmark_files(s: Settings, p: dict) -> tuple[str, ...]:
    return tuple(os.path.join(s.bench, f"{b}.jsonl") for b in p["benchmarks"])


def _protocol_settings(p: dict) -> dict:
    """What decides an evaluation's results (the batch size only decides its speed)."""
    return {k: v for k, v in p.items() if k != "batch_size"}


def _evaluate(s: Settings, which: list[str], p: dict, out: str) -> Command:
    """tools/evaluate.py with a protocol of evaluation.yaml, data-parallel over the GPUs (of every node)."""
    flags = ["--benchmark", *[f"{b}={os.path.join(s.bench, b + '.jsonl')}" for b in p["benchmarks"]]]
    for key, value in p.items():
        if key == "force_think":
            flags += ["--force-think" if value else "--no-force-think"]
        elif key != "benchmarks":
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return s.torchrun([s.tool("evaluate.py"), *which, "--tokenizer", os.path.join(_tokenized(s), "tokenizer"),
                       "--output", out, *flags], s.env)


def _summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def _count_lines(path: str) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.strip())

