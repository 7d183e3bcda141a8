"""tools/decontaminate.py: 8-gram overlap between training problems and benchmark files, reported."""

import json
import os
import subprocess
import sys

from megatron_redi.eval.decontaminate import ngrams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def decontaminate(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "decontaminate.py"), *map(str, args)],
                          capture_output=True, text=True)

LEAKED = "Let x be the smallest positive integer such that x squared ends in the digits 44. Find x."


def test_overlapping_problems_are_listed_and_nothing_changes(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"problem": "Compute 2+2."},
            {"problem": "Warm-up. " + LEAKED.upper()},  # case and punctuation do not hide it
            {"problem": "Let x be the smallest positive integer, odd."},  # 7 shared words only
            {"problem": None}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": LEAKED, "answer": "12"}) + "\n"
                     + json.dumps({"problem": "What is 3 times 7?", "answer": "21"}) + "\n")
    before = train.read_bytes()
    out = tmp_path / "report.json"
    done = decontaminate("--input", train, "--benchmark", bench, "--output", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    b = report["benchmarks"][str(bench)]
    assert (report["n"], report["training_rows"], b["problems"], b["benchmark_problems_hit"]) == (8, 3, 2, 1)
    assert [(h["row"], h["benchmark_line"]) for h in b["overlaps"]] == [(1, 1)]
    assert len(b["overlaps"][0]["shared"].split()) == 8
    assert "1 of 2 problems share a 8-gram" in done.stdout
    assert train.read_bytes() == before


def test_short_problems_compare_whole():
    assert ngrams("What is 3 times 7?", 8) == {("what", "is", "3", "times", "7")}
    assert len(ngrams(LEAKED, 8)) == len(LEAKED.split()) - 7


def test_a_bad_benchmark_exits_2(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"problem": "x"}\n')
    (tmp_path / "b.jsonl").write_text("[1]\n")
    done = decontaminate("--input", tmp_path / "t.jsonl", "--benchmark", tmp_path / "b.jsonl",
                         "--output", tmp_path / "r.json", "--no-progress")
    assert done.returncode == 2
    assert "b.jsonl: line 1" in done.stderr and not (tmp_path / "r.json").exists()
