"""python -m megatron_redi.recipe table1|table2 --root REPO: the paper's recipes, run stage by stage.

examples/run_redi_1.5b.sh (table1) and examples/run_ablations_1.5b.sh (table2) call this; their
headers list the variables read from the environment. Exit codes: 0 done (or DRY_RUN), 2 a missing
input or a refused stage (named, nothing started), 3 stopped by a signal (the same command
continues), 1 a stage's command failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess

from .. import slurm
from ..atomic import check_output
from ..cli import command
from .paper import RECIPES, STUDENTS, Settings, raw_files
from .pipeline import Pipeline, RecipeError, main_guard
from .toy import write_inputs

DEFAULT_OUT = {"table1": "runs/redi_1.5b", "table2": "runs/ablations_1.5b"}


def gpu_count() -> int:
    """GPUs visible to nvidia-smi (0 without one)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def _positive(env, name: str, default: int) -> int:
    value = env.get(name) or str(default)
    if not (value.isascii() and value.isdigit()) or int(value) < 1:  # "²".isdigit(), but int() refuses it
        raise RecipeError(f"{name}={value}: not a positive integer")
    return int(value)


def settings_from(env, recipe: str, root: str) -> Settings:
    toy = env.get("TOY", "") not in ("", "0")
    student_name = env.get("STUDENT", "qwen2.5-math-1.5b")
    if student_name not in STUDENTS:
        raise RecipeError(f"STUDENT={student_name}: one of {', '.join(STUDENTS)}")
    if recipe == "table2" and student_name != "qwen2.5-math-1.5b":
        raise RecipeError("STUDENT: the paper's Table 2 ablations are of Qwen2.5-Math-1.5B only")
    out = env.get("OUT") or DEFAULT_OUT[recipe] + ("_toy" if toy else "")
    if toy:
        given = [v for v in ("MODEL", "RAW", "BENCH", "TOKENIZER") if env.get(v)]
        if given or student_name != "qwen2.5-math-1.5b":
            raise RecipeError(f"TOY=1 makes its own tiny student, corpus and benchmarks: unset {' '.join(given) or 'STUDENT'}")
        inputs = os.path.join(out, "inputs")
        model, raw, bench = (os.path.join(inputs, d) for d in ("model", "raw", "benchmarks"))
        ngpu = _positive(env, "NGPU", 2)  # processes on the CPU
    else:
        model = env.get("MODEL") or STUDENTS[student_name].hub.split("/")[1]
        raw, bench = env.get("RAW") or "OpenR1-Math-Raw", env.get("BENCH") or "benchmarks"
        check_output(out, overwrite=True, keep=tuple(p for p in (model, raw, bench, env.get("SFT"), env.get("TOKENIZER"))
                                                     if p))
        ngpu = _positive(env, "NGPU", int(env.get("SLURM_GPUS_ON_NODE") or 0) or gpu_count() or 8)
    return Settings(root=root, out=out, model=model, raw=raw, bench=bench, tokenizer=env.get("TOKENIZER") or model,
                    sft=env.get("SFT") or None, ngpu=ngpu, workers=_positive(env, "WORKERS", min(16, os.cpu_count() or 1)),
                    student=STUDENTS[student_name], toy=toy,
                    every_node=tuple(slurm.srun_prefix(env)) if slurm.in_job(env) else (),
                    configs=os.path.normpath(os.path.join(root, "examples", "configs", "toy" if toy else "paper")))


def selected_stages(pipeline: Pipeline, spec: str | None) -> list[str]:
    names = [s.name for s in pipeline.stages]
    if not spec:
        return names
    wanted = [n.strip() for n in spec.split(",") if n.strip()]
    if not wanted:
        raise RecipeError(f"STAGES={spec}: names no stage (its stages: {','.join(names)})")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise RecipeError(f"STAGES: no stage {', '.join(unknown)} in this recipe (its stages: {','.join(names)})")
    return [n for n in names if n in wanted]  # the pipeline's order, whatever the order given


def missing_inputs(s: Settings, pipeline: Pipeline, selected: list[str]) -> list[str]:
    """One line per input that the selected stages read and that is not there, with its download (at
    toy scale only SFT: the toy makes its model, corpus and benchmarks itself)."""
    needed = {p for name in selected for p in pipeline.by_name[name].inputs}
    if s.toy:
        needed &= {s.sft}
    lines = []
    for path in dict.fromkeys(p for p in (s.model, s.tokenizer) if p in needed):
        if not os.path.isdir(path):
            lines.append(f"huggingface-cli download {s.student.hub} --local-dir {shlex.quote(path)}" if path == s.model
                         else f"# TOKENIZER={path}: no such directory (an HF tokenizer with a chat template)")
    if os.path.join(s.raw, "data") in needed and raw_files(s.raw) is None:
        lines.append(f"huggingface-cli download open-r1/OpenR1-Math-Raw --repo-type dataset --local-dir {shlex.quote(s.raw)}")
    if s.sft and s.sft in needed and not os.path.isdir(s.sft):
        lines.append(f"# SFT={s.sft}: no such directory (a stage-1 model, HF or native)")
    for path in sorted(p for p in needed if p.startswith(os.path.join(s.bench, "")) and not os.path.isfile(p)):
        name = os.path.basename(path)[:-len(".jsonl")]
        lines.append(f"python {os.path.join(s.root, 'tools', 'prepare_benchmarks.py')} {name} --output {shlex.quote(path)}")
    return lines


def make_toy_inputs(s: Settings) -> None:
    inputs = os.path.dirname(s.model)
    if not os.path.isdir(inputs):
        print(f"== the toy's inputs: {inputs} (megatron_redi/recipe/toy.py)", flush=True)
        write_inputs(inputs)


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m megatron_redi.recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   help="the repository (tools/, examples/)")
    args = p.parse_args(argv)

    def body():
        env = dict(os.environ)
        dry_run = env.pop("DRY_RUN", "") not in ("", "0")
        os.environ.pop("DRY_RUN", None)  # examples/launch.sh, run by the training stages, reads it too
        root = os.path.relpath(args.root)  # commands as short as a user would type them, from here
        s = settings_from(env, args.recipe, root if not root.startswith("..") else os.path.abspath(args.root))
        pipeline = Pipeline(s.out, RECIPES[args.recipe](s))
        selected = selected_stages(pipeline, env.get("STAGES"))
        missing = missing_inputs(s, pipeline, selected)
        if dry_run:
            print(pipeline.dry_run_text(selected))
            if missing:
                print("# missing inputs, to download first:\n" + "\n".join(missing))
            return
        if missing:  # before anything is created
            raise RecipeError("inputs missing (nothing was started); download them, then run the same command "
                              "again:\n  " + "\n  ".join(missing))
        pipeline.run(selected, prepare=(lambda: make_toy_inputs(s)) if s.toy else None)

    return main_guard(body)


if __name__ == "__main__":
    raise SystemExit(main())
