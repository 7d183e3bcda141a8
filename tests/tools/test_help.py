"""What a new user reads first: the trainer's help lists every key, --print-config resolves a
command line without running it, a command-line typo is named as one, and every tool's help shows
its defaults."""

import dataclasses
import glob
import importlib
import os
import pkgutil
import subprocess
import sys

import pytest
import yaml

from megatron_redi import commands
from megatron_redi.commands import preprocess_data
from megatron_redi.train import main as train_main
from megatron_redi.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "examples", "configs", "paper", "qwen2.5-math-1.5b_dpo.yaml")


@pytest.fixture
def train(capsys):
    """The trainer's command line, in this process: (exit code, stdout, stderr)."""

    def run(*args):
        capsys.readouterr()
        code = train_main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_help_lists_every_key_with_its_default_and_meaning(train):
    code, out, _ = train("--help")
    assert code == 0
    lines = out.splitlines()
    for section in dataclasses.fields(TrainConfig):
        for f in dataclasses.fields(section.default_factory):
            line = next((x for x in lines if x.split()[:1] == [f"{section.name}.{f.name}"]), None)
            assert line is not None, f"{section.name}.{f.name} missing from --help"
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert repr(default) in line and len(line.split(repr(default), 1)[1].strip()) > 5, line
    assert "redi | symmetric | dpo | simpo | sft" in out  # choices shown


def test_print_config_resolves_without_running(train):
    code, out, err = train("--config", CONFIG, "--model.path", "m", "--data.path", "d", "--optim.lr", "3e-7",
                           "--print-config")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["optim"]["lr"] == 3e-7 and cfg["loss"]["beta"] == 0.001 and cfg["model"]["path"] == "m"


def test_a_command_line_typo_is_named_as_the_command_line_s(train):
    code, _, err = train("--config", CONFIG, "--model.path", "m", "--data.path", "d", "--optim.lrr", "1")
    assert code == 2
    assert "command line: --optim.lrr: no key 'lrr' in optim" in err and CONFIG not in err
    code, _, err = train("--config", CONFIG, "--optimm.lr", "1")
    assert code == 2 and "command line: --optimm.lr: no section 'optimm'" in err


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


COMMANDS = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "tools", "*.py"))
                 if f"megatron_redi.commands.{os.path.basename(p)[:-3]} import main" not in _text(p))


def test_every_command_has_its_launcher_in_tools():
    for name in COMMANDS:
        assert f"from megatron_redi.commands.{name} import main" in _text(os.path.join(ROOT, "tools", f"{name}.py")), name


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_without_rest_markup(name, capsys):
    out = _help(importlib.import_module(f"megatron_redi.commands.{name}").main, capsys)
    assert "usage:" in out and "``" not in out


@pytest.mark.parametrize("tool", [p for p in SCRIPTS if "argparse" in _text(p)], ids=os.path.basename)
def test_every_script_has_help_without_rest_markup(tool):
    """The checkout's own scripts run as their users run them: from a path, in a process."""
    out = subprocess.run([sys.executable, tool, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "``" not in out.stdout


def test_preprocess_help_shows_the_limits(capsys):
    out = " ".join(_help(preprocess_data.main, capsys).split())  # argparse wraps lines
    for default in ("800", "19000", "32768", "['cn_k12']"):
        assert f"(default: {default})" in out, default


@pytest.mark.parametrize("command", [
    ["tools/preprocess_data.py", "--input", "x.jsonl", "--tokenizer", "Qwen/Qwen2.5-Math-1.5B", "--output-dir", "OUT"],
    ["tools/evaluate.py", "--checkpoint", "Qwen/Qwen2.5-Math-1.5B", "--benchmark", "x.jsonl", "--output", "o"],
    ["tools/convert_checkpoint.py", "native-to-hf", "--input", "Qwen/Qwen2.5-Math-1.5B", "--output", "OUT"],
])
def test_a_hub_name_fails_at_once_naming_it(tmp_path, command):
    import time

    (tmp_path / "x.jsonl").write_text("{}\n")
    start = time.time()
    out = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "0"})
    assert out.returncode == 2 and "Qwen/Qwen2.5-Math-1.5B: no such" in out.stderr, out.stderr[-1500:]
    assert time.time() - start < 60  # no Hub retries
    assert not os.path.exists(tmp_path / "OUT")
