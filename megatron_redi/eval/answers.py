"""Final answers: a generation's boxed answer, checked against the reference (or any of several).

The checkers:

    rllm         the grader of the paper's tables (DeepScaleR's): the last \\boxed{} after </think>
                 only, compared by the MATH normalisation, then by sympy (rllm_grader.py); the
                 final protocol's checker.
    math-verify  Hugging Face's Math-Verify on the last \\boxed{} of the whole generation, the
                 library of the paper's LightEval runs (the intermediate protocol's checker).
                 Both sides are parsed from LaTeX into sympy and compared as numbers, expressions,
                 sets, tuples, intervals or equations (units, degrees, \\text and percent handled).
    lighteval    Math-Verify as LightEval's math metric ran it in the paper's intermediate runs:
                 expressions and LaTeX read from the whole generation (a \\boxed{} preferred, not
                 required), and from the reference the same way, which for MATH-500 is the
                 benchmark's ``solution`` text (the intermediate protocol's ``gold``). The row's
                 ``predicted`` shows the last \\boxed{} (reading the whole output is the worker's,
                 under checking.py's time bound).
    letter       multiple choice (GPQA-Diamond): the option letter of the last "Answer: X" line (or
                 of the last \\boxed{X}), against the reference letter.
    builtin      a small normaliser, the fallback where math-verify cannot be imported: integers
                 (thousands separators too), decimals, fractions (a/b, \\frac, \\dfrac), signs,
                 $, \\left/\\right, spacing, degrees and percent signs stripped; numbers compared
                 exactly, anything else as a normalised string.

tests/eval/test_answers.py holds a table of answer pairs with each checker's verdict: where they
differ (radicals, intervals, sets and reordered multiple answers, units, equations) the built-in
one is the stricter, so it can only under-count.
"""

from __future__ import annotations

import re
import warnings
from fractions import Fraction

from . import rllm_grader


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    if i < len(text) and text[i] == " ":  # \boxed 5
        m = re.match(r"\s*([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
        j += 1
    return None  # unbalanced: the generation was cut off


def normalize(answer: str) -> str:
    s = answer.strip().strip("$").strip()
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("%", "")):
        s = s.replace(old, new)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def to_number(answer: str) -> Fraction | None:
    s = normalize(answer)
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    m = re.fullmatch(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", s) or re.fullmatch(r"\\frac(\d)(\d)", s)
    if m:
        num, den = to_number(m.group(1)), to_number(m.group(2))
        return sign * num / den if num is not None and den not in (None, 0) else None
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"\d+(\.\d*)?|\.\d+", s):
        return sign * Fraction(s)
    m = re.fullmatch(r"(\d+)/(\d+)", s)
    if m and int(m.group(2)):
        return sign * Fraction(int(m.group(1)), int(m.group(2)))
    return None


def _builtin_equal(pred: str, reference: str) -> bool:
    a, b = to_number(pred), to_number(reference)
    if a is not None and b is not None:
        return a == b
    return normalize(pred) == normalize(reference)


try:
    import math_verify
except ImportError:  # a dependency, so only a broken install lands here
    math_verify = None

CHECKERS = ("math-verify", "lighteval", "rllm", "letter", "builtin")
# "Answer: C", "**Answer:** (C)", "Answer: $C$": the format LightEval's GPQA prompt asks for. The
# quantifiers are possessive (*+, ?+): neighbours that could share a run of blanks would otherwise
# try every split of it when no letter follows (cubic in its length); none of them can match what
# the next one needs, so the language is the same.
ANSWER_LETTER = re.compile(r"(?i:answer)\s*+\**+\s*+:\s*+\**+\s*+\$?+\s*+\(?+\s*+([ABCD])\b")
BOXED_LETTER = re.compile(r"\s*+\(?+\s*+(?:\\text\{)?+\s*+([ABCD])\s*+\}?+\s*+\)?+\s*+")


def chosen_letter(generation: str) -> str | None:
    found = ANSWER_LETTER.findall(generation)
    if found:
        return found[-1].upper()
    boxed = last_boxed(generation)
    letter = BOXED_LETTER.fullmatch(boxed or "")
    return letter.group(1) if letter else None
_warned = False


def checker_in_use(checker: str = "math-verify") -> str:
    """The checker that ``is_correct(..., checker)`` runs: math-verify falls back to the built-in
    normaliser where it cannot be imported (warning once that the results may differ from the paper's)."""
    global _warned
    if checker not in CHECKERS:
        raise ValueError(f"answer checker {checker!r} is not one of {CHECKERS}")
    if checker in ("math-verify", "lighteval") and math_verify is None:
        if not _warned:
            warnings.warn("math-verify cannot be imported: answers are checked by the built-in normaliser, whose "
                          "verdicts may differ from the paper's (pip install math-verify)", stacklevel=2)
            _warned = True
        return "builtin"
    return checker


def _lighteval_targets(text: str) -> list:
    """What LightEval's math metric reads from a text: math expressions and LaTeX, anywhere in it."""
    return math_verify.parse(text, [math_verify.ExprExtractionConfig(), math_verify.LatexExtractionConfig()])


def lighteval_correct(generation: str, references) -> bool:
    gold = [_lighteval_targets(str(r)) for r in (references if isinstance(references, (list, tuple)) else [references])]
    found = _lighteval_targets(generation)
    return bool(found) and any(g and math_verify.verify(g, found) for g in gold)


def answers_equal(predicted: str, reference: str, checker: str = "math-verify") -> bool:
    if checker == "rllm":
        return rllm_grader.equal(predicted, reference)
    if checker == "letter":
        return predicted.strip().upper() == reference.strip().upper()
    if checker_in_use(checker) == "builtin":
        return _builtin_equal(predicted, reference)
    try:  # both sides as LaTeX math, as the paper's LightEval runs parsed the boxed answer
        return bool(math_verify.verify(math_verify.parse(f"${reference}$"), math_verify.parse(f"${predicted}$")))
    except Exception:  # noqa: BLE001 - e.g. its parsing timeout: an answer it cannot verify is not right
        return False


def predicted_answer(generation: str, checker: str = "math-verify") -> str | None:
    """The answer a checker reads from a generation."""
    if checker == "rllm":
        return rllm_grader.final_answer(generation)
    return chosen_letter(generation) if checker == "letter" else last_boxed(generation)


def is_correct(generation: str, reference, checker: str = "math-verify") -> bool:
    """``reference``: the answer, or a list of acceptable ones (any may match). Never raises: an
    answer a checker fails on is wrong, as the reference's reward scored it (checking.py bounds the
    time as well)."""
    try:
        if checker == "rllm":
            return rllm_grader.correct(generation, reference)
        if checker_in_use(checker) == "lighteval":
            return lighteval_correct(generation, reference)
        predicted = predicted_answer(generation, checker)
        references = reference if isinstance(reference, (list, tuple)) else [reference]
        return predicted is not None and any(answers_equal(predicted, str(r), checker) for r in references)
    except Exception:  # noqa: BLE001 - RecursionError, ValueError of a huge int, ...: not a right answer
        return False
