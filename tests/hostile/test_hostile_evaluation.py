"""Hostile input to the evaluation (tools/evaluate.py, tools/summary_table.py): bad benchmarks and
sampling settings, checkpoints without a tokenizer, prompts longer than the model's positions,
results made from other problems, outputs over inputs; each exits 2 with one line, before a model
is loaded where it can be, and loses nothing."""

import json

import pytest
from nothing_lost import refused, snapshot

from megatron_redi.commands import evaluate as evaluate_command, summary_table


@pytest.fixture(scope="module")
def evaluate():
    return evaluate_command.main


def _bench(path, answers=("2", "4")):
    path.write_text("".join(json.dumps({"problem": f"{i} + {i}", "answer": a}) + "\n" for i, a in enumerate(answers, 1)))
    return path


@pytest.fixture
def model(tiny_checkpoint, tiny_tokenizer_dir):
    return tiny_checkpoint(), tiny_tokenizer_dir


def _args(checkpoint, tokenizer, bench, out, *more):
    return ["--checkpoint", checkpoint, "--tokenizer", tokenizer, "--benchmark", bench, "--output", out,
            "--samples", "1", "--max-new-tokens", "2", "--no-progress", *more]


def test_a_benchmark_row_with_an_empty_answer(evaluate, model, tmp_path, capsys):
    err = refused(evaluate, *_args(*model, _bench(tmp_path / "b.jsonl", ("2", "")), tmp_path / "out"), capsys=capsys)
    assert "b.jsonl: line 2: field 'answer' is missing, empty" in err and not (tmp_path / "out").exists()


def test_a_checkpoint_without_tokenizer_files(evaluate, model, tmp_path, capsys):
    checkpoint, _ = model
    err = refused(evaluate, "--checkpoint", checkpoint, "--benchmark", _bench(tmp_path / "b.jsonl"), "--output",
                  tmp_path / "out", "--no-progress", capsys=capsys)
    assert f"{checkpoint}: no tokenizer files" in err and "--tokenizer" in err


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "temperature must be a finite number >= 0"),
    (["--top-p", "0"], "top_p in (0, 1]"),
    (["--top-p", "1.5"], "top_p in (0, 1]"),
    (["--max-problems", "0"], "argument --max-problems: must be at least 1, got 0"),
    (["--max-problems", "-1"], "argument --max-problems: must be at least 1, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--samples", "0"], "samples and max_new_tokens must be positive"),
])
def test_sampling_settings_are_checked(evaluate, model, tmp_path, capsys, flags, message):
    err = refused(evaluate, *_args(*model, _bench(tmp_path / "b.jsonl"), tmp_path / "out", *flags), capsys=capsys)
    assert message in err and not (tmp_path / "out").exists()


def test_a_prompt_longer_than_the_model_s_positions(evaluate, model, tmp_path, capsys):
    checkpoint, tokenizer = model
    short = tmp_path / "short"
    short.mkdir()
    for f in ("model.safetensors",):
        (short / f).symlink_to(f"{checkpoint}/{f}")
    config = json.loads(open(f"{checkpoint}/config.json").read())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}))
    err = refused(evaluate, *_args(short, tokenizer, _bench(tmp_path / "b.jsonl"), tmp_path / "out"), capsys=capsys)
    assert "problem 1 of the benchmark: its prompt has" in err and "the model 16 positions (2 such problems)" in err


def test_results_are_not_kept_for_other_problems(evaluate, model, tmp_path, capsys):
    bench, out = _bench(tmp_path / "b.jsonl"), tmp_path / "out"
    assert evaluate([str(a) for a in _args(*model, bench, out)]) == 0
    written = snapshot(out)
    _bench(bench, ("2", "5"))  # another answer, the same file name
    assert "another benchmark_sha256" in refused(evaluate, *_args(*model, bench, out), capsys=capsys)
    _bench(bench)
    assert "another benchmark_sha256" in refused(evaluate, *_args(*model, bench, out, "--max-problems", "1"),
                                                 capsys=capsys)
    assert snapshot(out) == written
    assert evaluate([str(a) for a in _args(*model, bench, out)]) == 0  # the same problems again: kept
    assert "done before, kept" in capsys.readouterr().out and snapshot(out) == written


def test_an_output_over_an_input(evaluate, model, tmp_path, capsys):
    checkpoint, tokenizer = model
    kept = snapshot(checkpoint, tokenizer)
    for out in (f"{checkpoint}/eval", tokenizer, tmp_path):  # inside the checkpoint; the tokenizer; above the benchmark
        err = refused(evaluate, *_args(checkpoint, tokenizer, _bench(tmp_path / "b.jsonl"), out), capsys=capsys)
        assert "refused, it would overwrite" in err
    assert snapshot(checkpoint, tokenizer) == kept


def test_summary_table_output_inside_its_input(tmp_path, capsys):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text('{"checkpoints": [], "best": null, "protocol": {}}')
    kept = snapshot(tmp_path / "eval")
    err = refused(summary_table.main, f"run={tmp_path / 'eval'}", "--output", tmp_path / "eval" / "table.md",
                  capsys=capsys)
    assert "refused, it would overwrite" in err and snapshot(tmp_path / "eval") == kept


def test_results_are_not_kept_for_another_tokenizer_or_chat_template(evaluate, model, tmp_path, capsys):
    """The same checkpoint and benchmark, the prompts made with another chat template (a copy of the
    tokenizer with its template changed): refused; the tokenizer copied elsewhere unchanged: kept."""
    import shutil

    checkpoint, tokenizer = model
    bench, out = _bench(tmp_path / "b.jsonl"), tmp_path / "out"
    assert evaluate([str(a) for a in _args(checkpoint, tokenizer, bench, out)]) == 0
    written = snapshot(out)
    other = tmp_path / "other_template"
    shutil.copytree(tokenizer, other)
    template = other / "chat_template.jinja"  # where transformers >= 5 saves it
    assert "<|im_start|>system" in template.read_text()
    template.write_text(template.read_text().replace("<|im_start|>system", "<|im_start|>System"))
    err = refused(evaluate, *_args(checkpoint, other, bench, out), capsys=capsys)
    assert "another tokenizer_sha256" in err and "chat template" in err and snapshot(out) == written
    shutil.copytree(tokenizer, tmp_path / "same_tokenizer")
    assert evaluate([str(a) for a in _args(checkpoint, tmp_path / "same_tokenizer", bench, out)]) == 0
    assert "done before, kept" in capsys.readouterr().out and snapshot(out) == written
