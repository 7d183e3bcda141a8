"""The toy study's pieces that decide its outcome: the decoy method, the problem draws, the
exact-label rows the pipeline reads, and the pre-registered decision rule (docs/toy_study.md)."""

import os
import random
import subprocess
import sys

from megatron_redi.data import synthetic
from megatron_redi.data.preprocess import Options, preprocess
from megatron_redi.data.dataset import TokenizedData
from megatron_redi.eval import toy_study as rules

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    results = []
    for lr, redi in ((1e-5, [70.0, 71.0, 72.0]), (2e-5, [70.0, 71.0, 72.0]), (4e-5, [60.0, 75.0, 66.0])):
        for seed in range(3):
            results += [row("more SFT", None, lr, seed, 65.0 + seed), row("alpha 0.0", "planted", lr, seed, 66.0),
                        row("alpha 0.8", "planted", lr, seed, redi[seed])]
    v = rules.verdict(results, [1e-5, 2e-5, 4e-5], ["planted"])["planted"]
    by_lr = v["by_lr"]
    # gain 71 - 66 = 5 > 2 x max(std 1.0, std 0.0): helps at the two quiet learning rates
    assert by_lr["1e-05"]["gain"] == 5.0 and by_lr["1e-05"]["helps"] and by_lr["2e-05"]["helps"]
    assert not by_lr["4e-05"]["helps"]  # the same mean gain, but a seed spread of 7.5
    assert v["helps"]  # two of three learning rates
    text = rules.table(results, [1e-5])
    assert "| alpha 0.8 | planted | 71.0 ± 1.0 (SEM 0.5) |" in text


def test_the_registered_test_of_the_explanation():

    def report(redi_minus_a0, std, decoy_share):
        by_lr = {lr: {"alpha0.8_minus_alpha0": d, "larger_std": s}
                 for lr, d, s in zip(("1e-05", "2e-05", "4e-05"), redi_minus_a0, std)}
        return {"negatives": {"planted": {"decoy_share": decoy_share}, "sibling": {"decoy_share": 0.0}},
                "verdict": {"planted": {"by_lr": by_lr}, "sibling": {"by_lr": by_lr}}}

    slips = report([-3.0, -3.0, -3.0], [0.5, 0.5, 0.5], 0.0)
    decoys = report([-1.0, -2.5, 0.0], [0.5, 0.1, 2.0], 1.0)
    v = rules.mechanism(slips, decoys)
    # differences +2.0 (> 2 x 0.5), +0.5 (not > 1.0), +3.0 (not > 4.0): holds at one lr only
    assert [x["holds"] for x in v["planted"]["by_lr"].values()] == [True, False, False]
    assert v["planted"]["decoys"] and not v["planted"]["supports"] and not v["sibling"]["decoys"]
    decoys = report([-1.0, -1.5, 0.0], [0.5, 0.1, 0.5], 1.0)
    v = rules.mechanism(slips, decoys)
    assert v["planted"]["supports"] and "is supported (decoy kinds: planted)" in rules.mechanism_table(v)
    # the same gains from negatives that are slips in task B too do not count
    no_decoys = report([-1.0, -1.5, 0.0], [0.5, 0.1, 0.5], 0.0)
    assert "not supported (decoy kinds: none)" in rules.mechanism_table(rules.mechanism(slips, no_decoys))


def test_the_plateau_rules_on_a_curve_that_stalls_early():
    # a slow start, a noisy rise and a settled end: like both tasks' stage 1 in run 1
    curve = list(enumerate([0.0, 0.0, 0.0, 0.0, 34.0, 68.0, 86.0, 85.8, 92.0, 97.0, 99.5, 99.8, 99.6, 99.8]))
    assert rules.plateau_epoch(curve, "registered") == 7  # 86.0 -> 85.8 adds under 0.5 point
    assert rules.plateau_epoch(curve, "settled") == 10  # 99.5 is within 0.5 of the best after it (99.8)
    assert rules.plateau_epoch([(0, 0.0), (1, 10.0), (2, 20.0)], "settled") == 2  # still rising: the end
    lucky = list(enumerate([0.0, 0.0, 0.0, 41.5, 67.4, 98.6, 89.4, 87.0, 97.0, 99.0, 98.8, 98.8]))
    assert rules.plateau_epoch(lucky, "settled") == 9  # not the lucky 98.6 at epoch 5


def test_the_explanations_test_names_a_file_it_cannot_use(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    for paths, expected in (([str(tmp_path / "missing.json"), str(empty)], "cannot read"),
                            ([str(empty), str(empty)], "not the results.json")):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "toy_study.py"), "--mechanism", *paths],
                              capture_output=True, text=True)
        assert done.returncode == 2
        assert expected in done.stderr and paths[0] in done.stderr
