"""Hostile input to the data tools (tools/preprocess_data.py, tools/decontaminate.py): outputs over
their inputs, broken saved datasets, inputs with nothing in them; each exits 2 with one line and
loses nothing."""

import json
import os

import pytest
from nothing_lost import refused, snapshot

from megatron_redi.data import synthetic
from megatron_redi.commands import decontaminate as decontaminate_command, preprocess_data


@pytest.fixture(scope="module")
def preprocess():
    return preprocess_data.main


@pytest.fixture(scope="module")
def decontaminate():
    return decontaminate_command.main


@pytest.fixture
def raw(tmp_path, tiny_tokenizer_dir):
    """A raw corpus in its own directory, and the tokenizer."""
    (tmp_path / "raw").mkdir()
    synthetic.write_corpus(str(tmp_path / "raw" / "traces.jsonl"), rows=20, digits=2, seed=0)
    return tmp_path / "raw", tiny_tokenizer_dir


@pytest.mark.parametrize("where", ["the input's directory", "above it", "the tokenizer"])
def test_preprocess_output_over_its_inputs_even_with_overwrite(preprocess, raw, tmp_path, capsys, where):
    raw_dir, tokenizer = raw
    out = {"the input's directory": raw_dir, "above it": tmp_path, "the tokenizer": tokenizer}[where]
    kept = snapshot(raw_dir, tokenizer)
    err = refused(preprocess, "--input", raw_dir / "traces.jsonl", "--tokenizer", tokenizer, "--output-dir", out,
                  "--overwrite", "--no-progress", capsys=capsys)
    assert "refused, it would overwrite" in err
    assert snapshot(raw_dir, tokenizer) == kept


def test_preprocess_output_that_is_a_file(preprocess, raw, tmp_path, capsys):
    raw_dir, tokenizer = raw
    (tmp_path / "out").write_text("keep me")
    err = refused(preprocess, "--input", raw_dir / "traces.jsonl", "--tokenizer", tokenizer, "--output-dir",
                  tmp_path / "out", "--no-progress", capsys=capsys)
    assert "exists and is not empty" in err and (tmp_path / "out").read_text() == "keep me"


@pytest.mark.parametrize("state", ['{"_data_files": [', '["x"]', '{"_data_files": [{"name": "a.arrow"}]}',
                                   '{"_data_files": [{"filename": 3}]}'])
def test_preprocess_saved_dataset_with_a_broken_state(preprocess, raw, tmp_path, capsys, state):
    _, tokenizer = raw
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text(state)
    err = refused(preprocess, "--input", tmp_path / "saved", "--tokenizer", tokenizer, "--output-dir", tmp_path / "out",
                  "--no-progress", capsys=capsys)
    assert "saved/state.json: not a datasets state file" in err or "not a string" in err
    assert not (tmp_path / "out").exists()


def test_preprocess_tokenizer_directory_without_a_tokenizer(preprocess, raw, tmp_path, capsys):
    raw_dir, _ = raw
    (tmp_path / "empty").mkdir()
    err = refused(preprocess, "--input", raw_dir / "traces.jsonl", "--tokenizer", tmp_path / "empty", "--output-dir",
                  tmp_path / "out", "--no-progress", capsys=capsys)
    assert "no tokenizer files" in err and not (tmp_path / "out").exists()


def _benchmark(path):
    path.write_text(json.dumps({"problem": "What is 12 plus 30 equal to in total here", "answer": "42"}) + "\n")
    return path


def test_decontaminate_output_over_an_input(decontaminate, raw, tmp_path, capsys):
    raw_dir, _ = raw
    bench = _benchmark(tmp_path / "bench.jsonl")
    kept = snapshot(raw_dir, bench)
    for output in (raw_dir / "traces.jsonl", bench, raw_dir / "traces.jsonl" / "report.json"):
        err = refused(decontaminate, "--input", raw_dir / "traces.jsonl", "--benchmark", bench, "--output", output,
                      "--no-progress", capsys=capsys)
        assert "refused, it would overwrite" in err
    assert snapshot(raw_dir, bench) == kept


@pytest.mark.parametrize("content", ["", "not json at all\n", '{"question": "no problem field"}\n'])
def test_decontaminate_never_gives_an_all_clear_over_nothing(decontaminate, tmp_path, capsys, content):
    (tmp_path / "train.jsonl").write_text(content)
    err = refused(decontaminate, "--input", tmp_path / "train.jsonl", "--benchmark", _benchmark(tmp_path / "b.jsonl"),
                  "--output", tmp_path / "report.json", "--no-progress", capsys=capsys)
    assert "no training row with a 'problem' string was read" in err and not (tmp_path / "report.json").exists()


def test_decontaminate_an_unreadable_file(decontaminate, raw, tmp_path, capsys):
    raw_dir, _ = raw
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    err = refused(decontaminate, "--input", raw_dir / "traces.jsonl", tmp_path / "broken.parquet", "--benchmark",
                  _benchmark(tmp_path / "b.jsonl"), "--output", tmp_path / "report.json", "--no-progress", capsys=capsys)
    assert "broken.parquet" in err and not (tmp_path / "report.json").exists()


def test_decontaminate_reports_when_rows_were_read(decontaminate, raw, tmp_path, capsys):
    """The all-clear it may give: rows read, none overlapping (and how many rows it skipped)."""
    raw_dir, _ = raw
    assert decontaminate(["--input", str(raw_dir / "traces.jsonl"), "--benchmark", str(_benchmark(tmp_path / "b.jsonl")),
                          "--output", str(tmp_path / "report.json"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["training_rows"] == 20 and report["rows_skipped"] == 0
    assert os.path.basename(str(tmp_path / "b.jsonl")) in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--max-prompt-tokens", "--max-response-tokens", "--max-sft-tokens", "--workers"])
def test_preprocess_limits_of_zero(preprocess, raw, tmp_path, capsys, flag):
    raw_dir, tokenizer = raw
    err = refused(preprocess, "--input", raw_dir / "traces.jsonl", "--tokenizer", tokenizer, "--output-dir",
                  tmp_path / "out", flag, "0", "--no-progress", capsys=capsys)
    assert f"argument {flag}: must be at least 1, got 0" in err and not (tmp_path / "out").exists()
