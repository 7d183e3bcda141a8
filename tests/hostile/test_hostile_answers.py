"""A model's output is untrusted input to the answer checkers: every checker returns a verdict, in
bounded time, for any string (megatron_redi/eval/checking.py's three layers)."""

import time

import pytest
from stuck_checks import never_ends

from megatron_redi.eval import checking
from megatron_redi.eval.answers import CHECKERS, chosen_letter, is_correct
from megatron_redi.eval.protocol import Protocol
from megatron_redi.eval.runner import score

# what models write when they go wrong, and what an attacker would: each after "</think>" and boxed
HOSTILE = {
    "exponent tower written with **": "9**9**9**9",
    "exponent tower in LaTeX": "9^{9^{9^{9}}}",
    "huge factorial": "100000!",
    "factorial of a power": "(10^5)!",
    "a fraction of 5,000 digits": "1" * 5000 + "/3",
    "10,000 nested braces": "{" * 10000 + "1" + "}" * 10000,
    "NUL bytes": "1\x002\x00",
    "a lone surrogate": "\ud800",
}


def _generation(answer: str) -> str:
    return f"<think>\nworking\n</think>\n\nSo the answer is $\\boxed{{{answer}}}$."


@pytest.mark.parametrize("checker", [c for c in CHECKERS if c != "letter"])
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_answers_get_a_verdict_quickly_without_the_pool(name, checker):
    """Layers 1 and 2 alone (shape limits, any exception a wrong verdict): within math-verify's own
    5 s timeouts, and in well under a second for the rllm grader of the paper's tables."""
    start = time.monotonic()
    assert is_correct(_generation(HOSTILE[name]), "3", checker) is False
    assert time.monotonic() - start < (0.5 if checker in ("rllm", "builtin") else 11)


def test_a_5_mb_generation_and_a_quadratic_letter_pattern_are_linear():
    huge = "step " * 1_000_000 + _generation("3")
    for checker in CHECKERS:
        start = time.monotonic()
        is_correct(huge, "3", checker)
        assert time.monotonic() - start < 2, checker
    start = time.monotonic()  # "Answer:" then blanks and no letter: every split of the blanks was tried
    assert chosen_letter("Answer:" + " " * 200_000 + "x") is None
    assert chosen_letter("**Answer:** " + " \t" * 100_000) is None
    assert time.monotonic() - start < 0.5
    assert [chosen_letter(t) for t in ("Answer: C", "**Answer:** (B)", "answer : $D$", "Answer: E")] == \
        ["C", "B", "D", None]


def test_a_check_past_the_time_bound_is_killed_replaced_and_scored_wrong():
    tasks = [("1", "1"), ("hang", "1"), ("2", "2"), ("crash", "1"), ("3", "4"), ("hang", "1"), ("5", "5")]
    start = time.monotonic()
    verdicts = checking.check_answers(tasks, "rllm", workers=2, time_limit=1.0, check=never_ends)
    assert time.monotonic() - start < 15
    assert [v.correct for v in verdicts] == [True, False, True, False, False, False, True]
    assert [v.bounded for v in verdicts] == [False, True, False, True, False, True, False]


def test_the_results_count_the_bounded_answers(monkeypatch):
    monkeypatch.setattr(checking, "TIME_LIMIT_S", 2.0)  # math-verify spends ~5 s on 10,000 nested braces
    problems = [{"problem": "1 + 2", "answer": "3"}, {"problem": "2 + 2", "answer": "4"}]
    generations = [[_generation("3"), _generation(HOSTILE["10,000 nested braces"])], [_generation("4"), "none"]]
    rows, summary = score(problems, generations, [[1, 1], [1, 1]], Protocol(samples=2, checker="math-verify"))
    assert [r["correct"] for r in rows] == [[True, False], [True, False]]
    assert [r["bounded"] for r in rows] == [[1], []] and summary["bounded_answers"] == 1
