"""The benchmarks from local copies in each Hub dataset's column layout (no network here), and from
the Hub through a stand-in for datasets.load_dataset."""

import json
import os
import re
import subprocess
import sys

import pytest

from megatron_redi.eval import load_benchmark
from megatron_redi.eval.benchmarks import BENCHMARKS, BenchmarkSourceError, prepare

pa = pytest.importorskip("pyarrow")  # optional where the CUDA tests run: skip, never a collection error
pq = pytest.importorskip("pyarrow.parquet")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rows(name, n):  # each dataset's columns and answer types
    if name == "math500":
        return [{"problem": f"p{i}", "solution": "s", "answer": f"\\frac{{{i}}}{{2}}", "subject": "Algebra",
                 "level": 3, "unique_id": f"test/algebra/{i}.json"} for i in range(n)]
    if name == "aime24":
        return [{"id": 60 + i, "problem": f"p{i}", "solution": "s", "answer": str(i), "url": "u", "year": "2024"}
                for i in range(n)]
    if name == "amc23":  # AI-MO/aimo-validation-amc
        return [{"id": i, "problem": f"p{i}", "answer": float(i) + (0.5 if i == 1 else 0.0), "url": "u"}
                for i in range(n)]
    if name == "amc23_40":
        return [{"id": i, "question": f"q{i}", "answer": float(i), "url": "u"} for i in range(n)]
    if name == "aime25":
        return [{"problem": f"p{i}", "answer": str(i), "solution": "s", "id": i} for i in range(n)]
    if name == "gpqa_diamond":
        return [{"Question": f"q{i}", "Correct Answer": f"right {i}", "Incorrect Answer 1": "w1",
                 "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Record ID": f"rec{i}",
                 "Subdomain": "Physics"} for i in range(n)]
    if name == "minerva":
        return [{"question": f"q{i}", "answer": f"{i} \\mathrm{{~m}}"} for i in range(n)]
    return [{"id": 1600 + i, "question": f"q{i}", "solution": ["s"], "final_answer": [f"${i}$"] + (["$7$"] if i == 0 else []),
             "context": None, "image_1": None, "is_multiple_answer": i == 0, "unit": None, "subfield": "Algebra"}
            for i in range(n)]


def _parquet(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def make_copy(root, name, n=None):
    """A download of the dataset's repository, in its layout."""
    rows = _rows(name, BENCHMARKS[name].size if n is None else n)
    if name == "math500":  # one JSON lines file at the top
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "test.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif name == "olympiadbench":  # one directory per config
        _parquet(os.path.join(root, "OE_TO_maths_en_COMP", "train-00000-of-00001.parquet"), rows)
        _parquet(os.path.join(root, "OE_TO_physics_en_COMP", "train-00000-of-00001.parquet"), rows[:5])
    elif name == "gpqa_diamond":  # one CSV... here parquet, per config, at the top
        _parquet(os.path.join(root, "gpqa_diamond", "train-00000-of-00001.parquet"), rows)
        _parquet(os.path.join(root, "gpqa_main", "train-00000-of-00001.parquet"), rows * 2)
    else:
        _parquet(os.path.join(root, "data", f"{BENCHMARKS[name].split}-00000-of-00001.parquet"), rows)
    open(os.path.join(root, "README.md"), "w").close()
    return str(root)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_benchmark_from_a_local_copy(name, tmp_path):
    rows = prepare(name, make_copy(tmp_path / name, name))
    assert len(rows) == BENCHMARKS[name].size
    if name == "gpqa_diamond":
        assert all(r["answer"] in "ABCD" for r in rows) and len({r["answer"] for r in rows}) == 4
        r = rows[3]
        assert r["problem"].startswith("Answer the following multiple choice question.") and "\n\nq3\n\nA) " in r["problem"]
        assert f"{r['answer']}) right 3" in r["problem"] and r["Record ID"] == "rec3"
        assert [x["answer"] for x in prepare(name, make_copy(tmp_path / "again", name))] == [x["answer"] for x in rows]
        return
    assert all(isinstance(r["answer"], str) for r in rows[1:])
    assert rows[3]["problem"] in ("p3", "q3")
    expected = {"math500": "\\frac{3}{2}", "aime24": "3", "aime25": "3", "amc23": "3", "amc23_40": "3",
                "minerva": "3 \\mathrm{~m}", "olympiadbench": "$3$"}[name]  # as written: the reference's key
    assert rows[3]["answer"] == expected
    if name == "amc23":
        assert rows[1]["answer"] == "1.5"  # only whole floats become integers
    if name == "olympiadbench":  # several answers: any of them is right
        assert rows[0]["answer"] == ["$0$", "$7$"] and rows[0]["is_multiple_answer"] is True
    if name == "math500":
        assert rows[3]["level"] == 3 and rows[3]["subject"] == "Algebra"  # metadata rides along


RLLM_FILES = {"math500": "math", "aime24": "aime", "amc23": "amc", "minerva": "minerva", "olympiadbench": "olympiad_bench"}


def _rllm_rows(name, n):
    """rllm/data/test/math/NAME.json's layout: problem, answer (Minerva's and OlympiadBench's a list)."""
    answer = {"minerva": lambda i: [f"{i}", f"{i}.0"] if i % 4 == 0 else [f"{i} \\mathrm{{~m}}"],
              "olympiadbench": lambda i: [f"$k={i}$"], "amc23": float}.get(name, str)
    extra = {"minerva": {"solution": "s", "type": "Physics", "idx": 0}}.get(name, {"difficulty": 2.0})
    return [{"problem": f"p{i}", "answer": answer(i), **extra} for i in range(n)]


@pytest.mark.parametrize("name", sorted(RLLM_FILES))
def test_rllm_s_test_sets_are_read_with_their_answer_lists(name, tmp_path):
    """The answer key the paper's reference scored against: one JSON array per benchmark."""
    path = tmp_path / f"{RLLM_FILES[name]}.json"
    path.write_text(json.dumps(_rllm_rows(name, BENCHMARKS[name].size), indent=1))
    rows = prepare(name, str(path))
    assert len(rows) == BENCHMARKS[name].size and rows[5]["problem"] == "p5"
    if name == "minerva":  # the accepted forms stay a list; one form, a string
        assert rows[4]["answer"] == ["4", "4.0"] and rows[5]["answer"] == "5 \\mathrm{~m}" and rows[5]["type"] == "Physics"
    if name == "olympiadbench":
        assert rows[1]["answer"] == "$k=1$"
    if name == "amc23":
        assert rows[7]["answer"] == "7"


def test_olympiadbench_answers_keep_their_dollars_and_the_reference_s_verdict():
    """rllm's grader rewrites "k=1" to "1" but "$k=1$" to "1$": a model boxing 1 was wrong for the
    reference (10 of the 675 problems of rllm's file have such an answer)."""
    from megatron_redi.eval.answers import is_correct
    from megatron_redi.eval.benchmarks import answer_text

    assert answer_text(["$k=1$"]) == "$k=1$" and answer_text(["$2$", "$3$"]) == ["$2$", "$3$"]
    assert not is_correct("<think>t</think> so \\boxed{1}", answer_text(["$k=1$"]), "rllm")
    assert is_correct("<think>t</think> so \\boxed{k=1}", answer_text(["$k=1$"]), "rllm")


def test_a_json_array_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "minerva.json"
    path.write_text('[{"problem": "p", "answer": ["1"]},\n 7]')
    with pytest.raises(BenchmarkSourceError, match=r"minerva.json: row 1: an element of the JSON array that is not"):
        prepare("minerva", str(path))
    path.write_text('[{"problem": "p", "answer": ["1"]},')
    with pytest.raises(BenchmarkSourceError, match=r"minerva.json: row -1: invalid JSON"):
        prepare("minerva", str(path))


def test_the_help_lists_every_benchmark_of_the_table():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_benchmarks.py"), "--help"],
                          capture_output=True, text=True, check=True)
    for name, bench in BENCHMARKS.items():
        assert re.search(rf"^  {name} +{re.escape(bench.repo)}.*: {bench.size} problems", done.stdout, re.M), name
    assert "math-ai/amc23, split test: 40" in done.stdout and "AI-MO/aimo-validation-amc, split train: 83" in done.stdout


def test_saved_datasets_and_single_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = _rows("minerva", 272)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert len(prepare("minerva", str(tmp_path / "saved"))) == 272
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    assert len(prepare("minerva", str(tmp_path / "dict"))) == 272
    _parquet(str(tmp_path / "one.parquet"), rows)
    assert prepare("minerva", str(tmp_path / "one.parquet"))[0]["problem"] == "q0"


def test_wrong_size_missing_column_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(BenchmarkSourceError, match=r"29 problems, but aime24 has 30 .*split train"):
        prepare("aime24", make_copy(tmp_path / "a", "aime24", n=29))
    root = make_copy(tmp_path / "m", "minerva")
    bad = _rows("minerva", 272)
    del bad[5]["answer"]
    _parquet(os.path.join(root, "data", "test-00000-of-00001.parquet"), bad)
    with pytest.raises(BenchmarkSourceError, match=r"test-00000-of-00001.parquet: row 5: column 'answer' is missing"):
        prepare("minerva", root)
    with pytest.raises(BenchmarkSourceError, match="no data file .*config OE_TO_maths_en_COMP"):
        prepare("olympiadbench", make_copy(tmp_path / "wrong", "math500"))
    with pytest.raises(BenchmarkSourceError, match="unknown benchmark 'gsm8k'"):
        prepare("gsm8k", str(tmp_path))


def test_the_hub_is_read_with_the_benchmark_s_repo_config_and_split(monkeypatch):
    datasets = pytest.importorskip("datasets")
    asked = []

    def load_dataset(repo, *config, split, streaming):
        asked.append((repo, config, split))
        return iter(_rows("olympiadbench", 675))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert len(prepare("olympiadbench")) == 675
    assert asked == [("Hothan/OlympiadBench", ("OE_TO_maths_en_COMP",), "train")]


def test_the_command_line_writes_a_benchmark_the_evaluator_reads(tmp_path):
    source = make_copy(tmp_path / "amc", "amc23")
    out = tmp_path / "amc23.jsonl"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "prepare_benchmarks.py"), "amc23", "--output", str(out),
           "--source", source]
    assert "83 problems" in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert len(load_benchmark(str(out))) == 83
    again = subprocess.run(cmd, capture_output=True, text=True)  # an existing output is kept
    assert again.returncode == 2 and "exists" in again.stderr and len(load_benchmark(str(out))) == 83
    inside = subprocess.run(cmd[:4] + [os.path.join(source, "x.jsonl"), "--source", source], capture_output=True, text=True)
    assert inside.returncode == 2 and "refused" in inside.stderr


def test_the_40_problem_amc_set_is_not_the_paper_s(tmp_path):
    """A 40-problem AMC23 (math-ai/amc23's layout) is refused as amc23: the paper's is the 83-problem set."""
    with pytest.raises(BenchmarkSourceError, match="40 problems, but amc23 has 83"):
        prepare("amc23", make_copy(tmp_path / "amc40", "amc23", n=40))
    assert len(prepare("amc23_40", make_copy(tmp_path / "forty", "amc23_40"))) == 40


def test_a_list_of_answers_is_read_and_any_of_them_is_right(tmp_path):
    from megatron_redi.eval.answers import is_correct

    (tmp_path / "b.jsonl").write_text(json.dumps({"problem": "p", "answer": ["2", "3"]}) + "\n")
    row = load_benchmark(str(tmp_path / "b.jsonl"))[0]
    assert row["answer"] == ["2", "3"]
    for checker in ("math-verify", "rllm", "builtin"):
        assert is_correct("<think>x</think> \\boxed{3}", row["answer"], checker)
        assert not is_correct("<think>x</think> \\boxed{4}", row["answer"], checker)



def test_two_answer_keys_of_a_benchmark_are_compared_problem_by_problem(tmp_path):
    """rllm's Minerva key against a Hub-style one: the same problems, answers written apart."""
    rllm = tmp_path / "minerva.json"
    rllm.write_text(json.dumps(_rllm_rows("minerva", 272)))
    hub = tmp_path / "hub.jsonl"  # one answer per problem; problem 5's is another value altogether
    hub.write_text("".join(json.dumps({"problem": f"p{i}  ", "answer": "99" if i == 5 else
                                       (f"{i}" if i % 4 == 0 else f"{i} \\mathrm{{~m}}")}) + "\n"
                           for i in range(272)))
    out = tmp_path / "minerva.jsonl"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_benchmarks.py"), "minerva", "--source",
                           str(rllm), "--output", str(out), "--compare-with", str(hub)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # 68 problems (every 4th) carry two forms in rllm's key, one in the other; problem 5 differs in value
    assert f"against {hub}: 272 of the 272 problems in both, 69 with their answers written differently, 1 of which " \
           "the rllm grader refuses" in done.stdout
