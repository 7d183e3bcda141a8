"""The three answer checkers side by side on a table of answer pairs.

Each row: (kind, boxed answer, reference, right?, math-verify's verdict, the built-in verdict, the
rllm grader's verdict). "right?" is the mathematical truth, so the table shows where each checker
errs as well as where they differ. The rllm column is what rllm's own grading code decides (checked
against it when the grader was written: the same verdict on these rows and on 3,000 random pairs of
answer shapes). docs/evaluation.md summarises it.
"""

import warnings

import pytest

from megatron_redi.eval import answers
from megatron_redi.eval.answers import answers_equal, checker_in_use, is_correct

TABLE = [
    ('decimal', '42.0', '42', True, True, True, True),
    ('decimal', '0.5', '\\frac{1}{2}', True, True, True, True),
    ('decimal', '0.333', '\\frac{1}{3}', False, False, False, False),
    ('decimal', '0.3333', '\\frac13', False, False, False, False),
    ('degrees', '30^\\circ', '30', True, True, True, True),
    ('degrees', '30^{\\circ}', '30^\\circ', True, True, True, True),
    ('degrees', '\\frac{\\pi}{2}', '90^\\circ', True, False, False, False),
    ('equation', 'x=3', '3', True, True, False, True),
    ('equation', 'y=2x+1', 'y = 2x + 1', True, True, True, True),
    ('equation', 'y=2x+1', '2x+1', True, True, False, True),
    ('expression', 'x^2+2x+1', '(x+1)^2', True, True, False, True),
    ('expression', 'x+1', 'x + 1', True, True, True, True),
    ('expression', '2\\pi', '2 \\pi', True, True, True, True),
    ('expression', '\\pi', '3.14159', False, False, False, False),
    ('expression', '3.14', '\\pi', False, False, False, False),
    ('fraction', '\\frac{3}{4}', '3/4', True, True, True, True),
    ('fraction', '\\dfrac{3}{4}', '\\frac{3}{4}', True, True, True, True),
    ('fraction', '\\tfrac34', '0.75', True, True, True, True),
    ('fraction', '\\frac{6}{8}', '\\frac{3}{4}', True, True, True, False),
    ('fraction', '-\\frac{1}{3}', '\\frac{-1}{3}', True, True, True, True),
    ('fraction', '\\frac{1}{3}', '\\frac{1}{4}', False, False, False, False),
    ('integer', '42', '42', True, True, True, True),
    ('integer', '43', '42', False, False, False, False),
    ('integer', '042', '42', True, True, True, True),
    ('integer', '1,000', '1000', True, True, True, True),
    ('integer', '1{,}000', '1000', True, True, False, True),
    ('interval', '(1,2]', '(1, 2]', True, True, True, True),
    ('interval', '[1,2)', '(1,2)', False, False, False, False),
    ('interval', '(-\\infty, 2]', '(-\\infty,2]', True, True, True, True),
    ('interval', '(-\\infty,0)\\cup(1,\\infty)', '(-\\infty, 0) \\cup (1, \\infty)', True, True, True, True),
    ('matrix', '\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}', '\\begin{pmatrix}1\\\\2\\end{pmatrix}', True, True, True, True),
    ('multiple', '1, 2', '2, 1', True, True, False, False),
    ('multiple', '1,2,3', '1, 2, 3', True, True, True, True),
    ('multiple', '1, 2', '1, 3', False, False, False, False),
    ('multiple', '\\{1,2\\}', '\\{2,1\\}', True, True, False, False),
    ('multiple', '3,4', '(3,4)', True, True, False, False),
    ('percent', '50\\%', '50', True, True, True, True),
    ('percent', '12', '12\\%', True, True, True, True),
    ('percent', '0.12', '12\\%', True, True, False, False),
    ('power', '10^3', '1000', True, True, False, False),
    ('radical', '2\\sqrt{2}', '\\sqrt{8}', True, True, False, True),
    ('radical', '\\frac{\\sqrt{3}}{2}', '\\frac{\\sqrt3}{2}', True, True, False, True),
    ('radical', '\\frac{1}{\\sqrt{2}}', '\\frac{\\sqrt{2}}{2}', True, True, False, True),
    ('radical', '\\sqrt{3}', '\\sqrt{2}', False, False, False, False),
    ('sign', '+5', '5', True, True, True, True),
    ('spacing', '\\left( 2 \\right)', '(2)', True, True, True, True),
    ('text', '\\text{Evelyn}', 'Evelyn', True, True, True, True),
    ('text', '\\text{(B)}', 'B', True, True, False, True),
    ('text', '\\text{yes}', '\\text{no}', False, False, False, False),
    ('text', 'B', '\\text{(B)}', True, True, False, True),
    ('tuple', '(3, 4)', '(3,4)', True, True, True, True),
    ('tuple', '(4,3)', '(3,4)', False, False, False, False),
    ('units', '10\\text{ cm}', '10', True, True, False, True),
    ('units', '5 \\text{ dollars}', '5', True, True, False, True),
    ('units', '\\$5', '5', True, True, False, True),
    ('units', '5', '\\text{5 apples}', True, False, False, False),
]


@pytest.mark.parametrize("kind,predicted,reference,right,math_verify,builtin,rllm", TABLE,
                         ids=[f"{row[0]}:{row[1]}|{row[2]}" for row in TABLE])
def test_each_checker_gives_its_verdict(kind, predicted, reference, right, math_verify, builtin, rllm):
    assert answers_equal(predicted, reference, "math-verify") is math_verify
    assert answers_equal(predicted, reference, "builtin") is builtin
    assert answers_equal(predicted, reference, "rllm") is rllm


def test_what_the_table_shows():
    assert len(TABLE) >= 40 and len({row[0] for row in TABLE}) >= 12
    differ = [row for row in TABLE if row[4] != row[5]]
    assert len(differ) == 17
    # where they differ the built-in checker is the one that rejects: it can only under-count
    assert all(row[4] and not row[5] for row in differ)
    # math-verify's two misses: an angle in radians against degrees, a number against a worded answer
    assert [row[1] for row in TABLE if row[4] != row[3]] == ["\\frac{\\pi}{2}", "5"]
    # rllm's eight: those two, an unreduced fraction and a power against an integer (matched exactly,
    # never simplified), reordered or unbracketed multiple answers, a decimal against a percent; it
    # never accepts a wrong answer here
    rllm_misses = [(row[1], row[2]) for row in TABLE if row[6] != row[3]]
    assert len(rllm_misses) == 8 and all(row[3] for row in TABLE if row[6] != row[3])
    assert ("\\frac{6}{8}", "\\frac{3}{4}") in rllm_misses and ("10^3", "1000") in rllm_misses


# (generation, reference, math-verify's verdict, rllm's verdict): where the answer is read from
GENERATIONS = [
    ("<think>4 + 4 = 8</think>\n\nSo the answer is \\boxed{8}.", "8", True, True),
    ("<think>so it is \\boxed{8}</think> The answer is 8.", "8", True, False),  # boxed inside the thinking only
    ("<think>it is 8, so \\boxed{8}", "8", True, False),  # no </think>: cut at the token limit
    ("the answer is \\boxed{8}", "8", True, False),  # never thought: no </think>
    ("<think>\\boxed{7}</think> Checking again: \\boxed{8}", "8", True, True),  # the last box after </think>
    ("<think>a</think> \\boxed{8} <think>b</think> \\boxed{9}", "8", False, True),  # after the first </think> only
    ("<think>a</think> \\boxed 8", "8", True, False),  # an unbraced box is no answer to rllm
    ("<think>a</think> \\boxed{\\dfrac{1}{2}}", "0.5", True, True),
    ("<think>a</think> \\boxed{(2,3)}", ["(2, 3)", "(3, 2)"], True, True),  # any of several references
    ("<think>a</think> \\boxed{5}", ["4", "6"], False, False),
    ("<think>a</think> \\boxed{12}", "\\boxed{12}", True, True),  # a boxed reference: its content
]


@pytest.mark.parametrize("generation,reference,math_verify,rllm", GENERATIONS)
def test_where_each_checker_reads_the_answer(generation, reference, math_verify, rllm):
    assert is_correct(generation, reference, "math-verify") is math_verify
    assert is_correct(generation, reference, "rllm") is rllm


def test_the_whole_generation_is_checked_by_its_last_box():
    assert is_correct("first \\boxed{3}, then, correcting: \\boxed{2\\sqrt{2}}", "\\sqrt{8}")
    assert not is_correct("the answer is 42", "42")
    assert not is_correct("\\boxed{42", "42")  # cut off before the box closed


def test_without_math_verify_the_builtin_checker_runs_and_warns_once(monkeypatch):
    monkeypatch.setattr(answers, "math_verify", None)
    monkeypatch.setattr(answers, "_warned", False)
    with pytest.warns(UserWarning, match="may differ from the paper's"):
        assert checker_in_use("math-verify") == "builtin"
        assert not is_correct("\\boxed{2\\sqrt{2}}", "\\sqrt{8}")  # the built-in verdict
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert is_correct("\\boxed{0.5}", "\\frac{1}{2}")
    with pytest.raises(ValueError, match="not one of"):
        checker_in_use("sympy")


@pytest.mark.parametrize("generation,letter", [
    ("... so the third option holds.\nAnswer: C", "C"),
    ("**Answer:** (B)", "B"),
    ("Answer: $D$", "D"),
    ("Answer: C, or rather, on reflection, Answer: B", "B"),  # the last one given
    ("the answer is \\boxed{A}", "A"),
    ("answer: a number we cannot pin down", None),  # a lower-case word is not an option
    ("Answer: Because of symmetry", None),
    ("no answer at all", None),
])
def test_multiple_choice_answers_are_read_by_their_letter(generation, letter):
    assert answers.chosen_letter(generation) == letter
    assert is_correct(generation, "B", "letter") is (letter == "B")


# MATH-500-style rows: the gold of the paper's LightEval runs is the solution text, not the answer
LIGHTEVAL_PROBLEMS = [
    {"problem": "What is $2+2$?", "answer": "4", "solution": "Adding, $2+2=\\boxed{4}$."},
    {"problem": "Half of 9?", "answer": "\\frac{9}{2}", "solution": "It is $\\frac92$, so $\\boxed{\\frac{9}{2}}$."},
]


@pytest.mark.parametrize("generation,right_for_lighteval,right_boxed_only", [
    ("<think>2 and 2</think> Therefore, the final answer is: $\\boxed{4}$. I hope it is correct", True, True),
    ("<think>2 and 2</think> The answer is 4.", True, False),  # no box: read from the whole output
    ("The sum is $4$", True, False),
    ("so \\boxed{5}", False, False),
    ("no answer at all", False, False),
])
def test_the_lighteval_checker_reads_the_whole_output_against_the_solution(generation, right_for_lighteval,
                                                                           right_boxed_only):
    from megatron_redi.eval.answers import is_correct

    row = LIGHTEVAL_PROBLEMS[0]
    assert is_correct(generation, row["solution"], "lighteval") is right_for_lighteval
    assert is_correct(generation, row["answer"], "math-verify") is right_boxed_only


def test_the_intermediate_protocol_scores_as_lighteval_did_and_the_boxed_one_stays_by_name():
    from megatron_redi.eval import score
    from megatron_redi.eval.protocol import named
    from megatron_redi.eval.runner import BenchmarkError

    lighteval, boxed = named("intermediate"), named("intermediate_boxed")
    assert (lighteval.samples, lighteval.checker, lighteval.force_think, lighteval.gold) == (4, "lighteval", False,
                                                                                             "solution")
    assert (boxed.samples, boxed.checker, boxed.force_think, boxed.gold) == (4, "math-verify", True, "answer")
    outputs = [["The answer is 4.", "\\boxed{4}", "5", "$4$"], ["so 9/2", "\\boxed{\\frac{9}{2}}", "x", "4.5"]]
    lengths = [[3] * 4] * 2
    rows, summary = score(LIGHTEVAL_PROBLEMS, outputs, lengths, lighteval)
    assert [r["correct"] for r in rows] == [[True, True, False, True], [True, True, False, True]]
    assert summary["protocol"]["name"] == "intermediate" and summary["protocol"]["gold"] == "solution"
    rows, _ = score(LIGHTEVAL_PROBLEMS, outputs, lengths, boxed)
    assert [r["correct"] for r in rows] == [[False, True, False, False], [False, True, False, False]]
    with pytest.raises(BenchmarkError, match="problem 1 of the benchmark has no 'solution' to compare with .*"
                                             "--protocol intermediate_boxed"):
        score([{"problem": "p", "answer": "1"}], [["1"] * 4], [[1] * 4], lighteval)
