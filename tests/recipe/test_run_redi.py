"""The front door: examples/run_redi_1.5b.sh (and run_ablations_1.5b.sh beside it) as a user runs it.

At toy scale (TOY=1) the whole recipe runs end to end on the CPU: preempted inside stage 2, run
again (the stages done are kept, stage 2 resumes from its checkpoint), through the evaluations to
the printed table; an invocation while another holds the run stops at once. Without inputs it stops at once with the download commands; DRY_RUN=1 prints
commands that torchrun and the tools accept."""

import glob
import os
import re
import shlex
import signal
import subprocess
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE_VARIABLES = ("MODEL", "RAW", "BENCH", "OUT", "NGPU", "SFT", "STAGES", "STUDENT", "TOKENIZER", "DRY_RUN",
                    "TOY", "WORKERS")


def _env(**values):
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}
    return {**env, **{k: str(v) for k, v in values.items()}}


def _run(script="run_redi_1.5b.sh", timeout=600, **values):
    return subprocess.run(["bash", os.path.join(ROOT, "examples", script)], env=_env(**values), capture_output=True,
                          text=True, timeout=timeout)


def _commands(dry_run_output: str) -> dict[str, list[list[str]]]:
    """stage -> its commands (argv, environment assignments first), from DRY_RUN's output."""
    commands, stage = {}, None
    for line in dry_run_output.split("== the commands, in order\n", 1)[1].splitlines():
        if line.startswith("# missing"):
            break
        if line.startswith("# "):
            stage = line[2:]
            commands[stage] = []
        else:
            commands[stage].append(shlex.split(line))
    return commands


def _assignments(argv: list[str]) -> dict[str, str]:
    """The VAR=value words in front of a command."""
    return dict(a.split("=", 1) for a in argv if re.match(r"^[A-Z_]+=", a))


def _missing_inputs(tmp_path):
    return dict(MODEL=tmp_path / "Qwen2.5-Math-1.5B", RAW=tmp_path / "OpenR1-Math-Raw", BENCH=tmp_path / "bench",
                OUT=tmp_path / "out", NGPU=8)


def test_missing_inputs_stop_at_once_with_the_downloads(tmp_path):
    start = time.time()
    done = _run(**_missing_inputs(tmp_path))
    assert done.returncode == 2, done.stderr
    assert time.time() - start < 60
    assert f"huggingface-cli download Qwen/Qwen2.5-Math-1.5B --local-dir {tmp_path}/Qwen2.5-Math-1.5B" in done.stderr
    assert f"open-r1/OpenR1-Math-Raw --repo-type dataset --local-dir {tmp_path}/OpenR1-Math-Raw" in done.stderr
    for name in ("math500", "aime24", "amc23", "minerva", "olympiadbench"):
        assert f"prepare_benchmarks.py {name} --output {tmp_path}/bench/{name}.jsonl" in done.stderr
    assert not (tmp_path / "out").exists()  # no partial run directory


def test_only_what_the_selected_stages_read_is_asked_for(tmp_path):
    done = _run(STAGES="data", **_missing_inputs(tmp_path))
    assert done.returncode == 2 and "OpenR1-Math-Raw" in done.stderr and "prepare_benchmarks" not in done.stderr


def test_dry_run_prints_every_command_and_creates_nothing(tmp_path):
    done = _run(DRY_RUN=1, **_missing_inputs(tmp_path))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out").exists()
    commands = _commands(done.stdout)
    assert list(commands) == ["data", "sft", "redi", "redi_select", "redi_final", "table"]
    sft, redi = (_assignments(commands[stage][0]) for stage in ("sft", "redi"))
    assert sft["CONFIG"].endswith("configs/paper/qwen2.5-math-1.5b_sft_5ep.yaml") and os.path.isfile(sft["CONFIG"])
    assert redi["CONFIG"].endswith("configs/paper/qwen2.5-math-1.5b_redi.yaml") and redi["MODEL"] == f"{tmp_path}/out/sft/hf"
    assert "# missing inputs" in done.stdout
    table = commands["table"][0]
    assert table[table.index("--paper") + 1] == "Qwen-REDI-1.5B"


def test_torchrun_passes_the_evaluations_arguments_intact(tmp_path):
    """torchrun's parser reads options after the script too: --run would be its --run-path."""
    from torch.distributed.run import get_args_parser

    commands = _commands(_run(DRY_RUN=1, **_missing_inputs(tmp_path)).stdout)
    launched = [c for stage in ("redi_select", "redi_final") for c in commands[stage] if c[0] == "torchrun"]
    assert len(launched) == 2
    for argv in launched:
        args = get_args_parser().parse_args(argv[1:])
        assert args.nproc_per_node == "8" and args.training_script.endswith("tools/evaluate.py")
        assert args.training_script_args == argv[argv.index(args.training_script) + 1:]
    select = launched[0]
    assert select[select.index("--protocol") + 1] == "intermediate" and select[select.index("--select-by") + 1] == "math500"
    final = launched[1]
    assert final[final.index("--protocol") + 1] == "final" and "olympiadbench=" in " ".join(final)


def test_inside_a_slurm_job_training_and_evaluation_run_on_every_node(tmp_path):
    """With SLURM's environment the multi-process stages go through srun and megatron_redi.slurm (its
    rendezvous, no --standalone); the one-process stages stay on this node."""
    slurm = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2"}
    commands = _commands(_run(DRY_RUN=1, **slurm, **{**_missing_inputs(tmp_path), "NGPU": 4}).stdout)
    every_node = ["srun", "--nodes", "2", "--ntasks-per-node", "1", "python", "-m", "megatron_redi.slurm"]
    for stage in ("sft", "redi", "redi_select", "redi_final"):
        argv = [a for a in commands[stage][0] if not re.match(r"^[A-Z_]+=", a)]
        assert argv[:len(every_node)] == every_node, (stage, argv)
        assert "--standalone" not in argv and "--kill-on-bad-exit=1" not in argv
    evaluate = commands["redi_select"][0]
    assert evaluate[evaluate.index("torchrun") + 1:evaluate.index("torchrun") + 3] == ["--nproc-per-node", "4"]
    assert _assignments(commands["redi"][0])["NGPU"] == "4"
    for stage in ("data", "table"):  # this node, one process
        assert "srun" not in commands[stage][0] and "megatron_redi.slurm" not in commands[stage][0], commands[stage]


@pytest.mark.slow
def test_stages_sft_and_students(tmp_path):
    inputs = _missing_inputs(tmp_path)
    assert list(_commands(_run(DRY_RUN=1, STAGES="sft,data", **inputs).stdout)) == ["data", "sft"]
    bad = _run(STAGES="data,train", **inputs)
    assert bad.returncode == 2 and "no stage train" in bad.stderr
    (tmp_path / "sft_model").mkdir()
    commands = _commands(_run(DRY_RUN=1, SFT=tmp_path / "sft_model", **inputs).stdout)
    assert "sft" not in commands and f"MODEL={tmp_path}/sft_model" in commands["redi"][0]
    seven = _run(DRY_RUN=1, STUDENT="qwen2.5-math-7b", **inputs)
    assert "qwen2.5-math-7b_sft.yaml" in seven.stdout and "--paper 'Qwen2.5-Math-7B REDI'" in seven.stdout
    qwen3 = _run(DRY_RUN=1, STUDENT="qwen3-4b", **inputs)
    assert qwen3.returncode == 0, qwen3.stderr
    commands = _commands(qwen3.stdout)
    assert "configs/paper/qwen3-4b_sft.yaml" in " ".join(commands["sft"][0])
    assert "configs/paper/qwen3-4b_redi.yaml" in " ".join(commands["redi"][0])
    assert "--paper" not in commands["table"][0] and "Qwen3-4B-Base REDI (this run)=" in " ".join(commands["table"][0])
    assert _run(STUDENT="gpt2", **inputs).returncode == 2


def test_the_ablations_share_the_recipe(tmp_path):
    done = _run("run_ablations_1.5b.sh", DRY_RUN=1, **_missing_inputs(tmp_path))
    assert done.returncode == 0, done.stderr
    commands = _commands(done.stdout)
    losses = ("redi", "symmetric", "dpo", "simpo")
    assert list(commands) == ["data", "sft_3ep", "start_final"] + [f"{loss}{suffix}" for loss in losses
                                                                   for suffix in ("", "_select", "_final")] + ["table"]
    for loss in losses:
        assert f"configs/paper/qwen2.5-math-1.5b_{loss}.yaml" in " ".join(commands[loss][0])
        assert f"MODEL={tmp_path}/out/sft_3ep/hf" in commands[loss][0]
    assert len(re.findall(r"paper", " ".join(commands["table"][0]))) == 1  # one --paper with the five rows
    assert "Qwen-SFT-1.5B-3ep" in commands["table"][0]


def test_every_toy_config_is_its_paper_twin_at_toy_scale():
    for toy in glob.glob(os.path.join(ROOT, "examples", "configs", "toy", "*.yaml")):
        paper_file = toy.replace(os.sep + "toy" + os.sep, os.sep + "paper" + os.sep)
        with open(toy) as f, open(paper_file) as g:
            small, paper = yaml.safe_load(f), yaml.safe_load(g)
        if os.path.basename(toy) == "evaluation.yaml":
            for protocol in ("intermediate", "final"):
                assert small[protocol]["protocol"] == paper[protocol]["protocol"] == protocol
                assert small[protocol]["benchmarks"] == paper[protocol]["benchmarks"]
                # the toy changes the length, the prompt and (for the final) the checker; never the sampling
                assert not {"samples", "temperature", "top_p"} & (small[protocol].keys() | paper[protocol].keys())
            continue
        assert small["train"]["stage"] == paper["train"]["stage"] and small["train"]["epochs"] == paper["train"]["epochs"]
        assert small["loss"] == paper["loss"], toy
        assert small.get("reference") == paper.get("reference"), toy


# ---- end to end at toy scale ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy recipe preempted in stage 2, then the same command again to the end: (the first
    run's output, the second's, OUT)."""
    out = tmp_path_factory.mktemp("toy") / "run"
    env = _env(TOY=1, OUT=out)
    script = os.path.join(ROOT, "examples", "run_redi_1.5b.sh")
    first = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 400
    while not glob.glob(str(out / "redi" / "checkpoints" / "step_*")) and first.poll() is None:
        assert time.time() < deadline, "no stage-2 checkpoint in time"
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)  # a preemption, as a scheduler sends it
    first_output = first.communicate(timeout=300)[0]
    first_output += f"\nexit {first.returncode}"
    second = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    return first_output, second, out


@pytest.mark.slow
def test_toy_preempted_stops_with_a_checkpoint(toy_run):
    first, _, out = toy_run
    assert first.endswith("exit 3"), first[-3000:]
    assert "stopped (SIGTERM) in stage redi: run the same command to continue" in first
    assert "checkpoint" in first and "written; run the same command again to resume" in first


def test_a_second_invocation_stops_at_once(tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # the first invocation, still running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.time()
        second = _run(TOY=1, OUT=out, timeout=120)
    assert second.returncode == 2 and "another run of the recipe" in second.stderr and time.time() - start < 60
    assert os.listdir(out) == [".lock"]  # it made nothing, not even the toy's inputs


@pytest.mark.slow
def test_toy_rerun_resumes_and_keeps_the_stages_done(toy_run):
    _, second, out = toy_run
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    text = second.stdout
    assert "[1/6] data: done before, kept" in text and "[2/6] sft: done before, kept" in text
    assert "[3/6] redi: continuing" in text and re.search(r"resumed from .*step_\d+ \(step \d+\)", text + second.stderr)
    for stage in ("redi_select", "redi_final", "table"):
        assert f"{stage}: starting" in text


@pytest.mark.slow
def test_toy_runs_every_stage_to_the_table(toy_run):
    _, second, out = toy_run
    table = (out / "table" / "table.md").read_text().splitlines()
    assert table[0].startswith("| model | math500 pass@1 (%) ± SEM, k=16 |") and table[0].endswith("| Avg. |")
    ours, paper = table[2], table[3]
    assert ours.startswith("| toy Qwen-REDI-1.5B (this run) |") and len(re.findall(r"\d+\.\d ± \d+\.\d", ours)) == 5
    assert paper == "| paper: Qwen-REDI-1.5B | 83.1 ± 0.3 | 28.1 ± 1.1 | 62.4 ± 0.6 | 28.8 ± 0.3 | 45.2 ± 0.2 | 49.5 ± 0.3 |"
    assert (out / "redi_final" / "hf" / "config.json").exists() and (out / "redi_final" / "figure6.png").exists()
    assert (out / "redi_select" / "curve.png").exists()
    selected = yaml.safe_load((out / "redi_select" / "summary.json").read_text())
    assert selected["protocol"]["samples"] == 4 and selected["best"]["selected_by"] == "pass@1 on math500"
    assert len(selected["checkpoints"]) >= 3  # every 40 steps of 228, and the last
    final = yaml.safe_load((out / "redi_final" / "summary.json").read_text())
    assert final["protocol"]["samples"] == 16 and final["checkpoints"][0]["checkpoint"] == selected["best"]["checkpoint"]
    assert "== outputs" in second.stdout and "D_SFT 2,185 sequences" in second.stdout


@pytest.mark.slow
def test_toy_third_run_does_nothing_and_a_changed_input_is_refused(toy_run):
    _, _, out = toy_run
    again = _run(TOY=1, OUT=out, timeout=120)
    assert again.returncode == 0 and again.stdout.count("done before, kept") == 6
    raw = out / "inputs" / "raw" / "data" / "train.jsonl"
    raw.write_text(raw.read_text() + raw.read_text().splitlines()[0] + "\n")  # one row more
    refused = _run(TOY=1, OUT=out, timeout=120)
    assert refused.returncode == 2
    assert "stage data was made from other inputs or settings (its input files changed since)" in refused.stderr
    assert f"move {out}/data aside" in refused.stderr
