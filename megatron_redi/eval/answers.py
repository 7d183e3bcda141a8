"""Final answers: the last ``\\boxed{...}`` of a generation, checked against the reference.

With ``math-verify`` installed (``pip install math-verify``) answers are compared by it, as the
paper's evaluation did. Without it, a built-in normaliser handles integers (with or without
thousands separators), decimals, fractions (``a/b``, ``\\frac{a}{b}``, ``\\dfrac``), signs, ``$``,
``\\left``/``\\right``, ``\\!`` and spacing, and compares numbers exactly (as fractions); other
answers are compared as normalised strings.
"""

from __future__ import annotations

import re
from fractions import Fraction


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


try:  # the paper's checker, when installed
    from math_verify import parse as _mv_parse, verify as _mv_verify
except ImportError:
    _mv_parse = _mv_verify = None


def is_correct(generation: str, reference: str) -> bool:
    predicted = last_boxed(generation)
    if predicted is None:
        return False
    if _mv_verify is not None:
        try:
            return bool(_mv_verify(_mv_parse(f"${reference}$"), _mv_parse(f"${predicted}$")))
        except Exception:  # noqa: BLE001 - fall back to the built-in check on parser errors
            pass
    return _builtin_equal(predicted, reference)
