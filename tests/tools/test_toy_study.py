"""The toy study's pieces that decide its outcome: the decoy method, the problem draws, the
exact-label rows the pipeline reads, and the pre-registered decision rule (docs/toy_study.md)."""

import importlib.util
import os
import random

from megatron_redi.data import synthetic
from megatron_redi.data.preprocess import Options, preprocess
from megatron_redi.data.dataset import TokenizedData

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location("toy_study", os.path.join(ROOT, "tools", "toy_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_decoy_is_wrong_and_shares_no_step_with_the_correct_method():
    rng = random.Random(0)
    problems = synthetic.draw_problems(rng, 300, 6, decoy_safe=True)
    assert len(set(problems)) == 300
    for a, b in problems:
        decoy, answer = synthetic.estimate(a, b)
        correct = synthetic.solve(a, b, 6)[0]
        assert answer != a + b and decoy.startswith("est ") and "~" in decoy  # never right
        assert "est" not in correct and "~" not in correct
    held_out = synthetic.draw_problems(rng, 50, 6, exclude=problems)
    assert not set(held_out) & set(problems)


def test_exact_label_rows_become_the_intended_pair(tiny_tokenizer_dir, tmp_path):
    rows = [synthetic.schema_row(123, 456, ["right trace", "wrong trace"], [True, False]),
            synthetic.schema_row(111, 222, ["only right"], [True])]
    path = tmp_path / "rows.jsonl"
    import json
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preprocess([str(path)], str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir), progress=False)
    data = TokenizedData(str(tmp_path / "out"))
    assert len(data.sft) == 2 and len(data.pairs) == 1


def row(arm, kind, lr, seed, value):
    return {"arm": arm, "kind": kind, "lr": lr, "seed": seed, "pass@1": value, "sem": 0.5}


def test_the_pre_registered_rule():
    tool = _tool()
    results = []
    for lr, redi in ((1e-5, [70.0, 71.0, 72.0]), (2e-5, [70.0, 71.0, 72.0]), (4e-5, [60.0, 75.0, 66.0])):
        for seed in range(3):
            results += [row("more SFT", None, lr, seed, 65.0 + seed), row("alpha 0.0", "planted", lr, seed, 66.0),
                        row("alpha 0.8", "planted", lr, seed, redi[seed])]
    v = tool.verdict(results, [1e-5, 2e-5, 4e-5], ["planted"])["planted"]
    by_lr = v["by_lr"]
    # gain 71 - 66 = 5 > 2 x max(std 1.0, std 0.0): helps at the two quiet learning rates
    assert by_lr["1e-05"]["gain"] == 5.0 and by_lr["1e-05"]["helps"] and by_lr["2e-05"]["helps"]
    assert not by_lr["4e-05"]["helps"]  # the same mean gain, but a seed spread of 7.5
    assert v["helps"]  # two of three learning rates
    text = tool.table(results, [1e-5])
    assert "| alpha 0.8 | planted | 71.0 ± 1.0 (SEM 0.5) |" in text
