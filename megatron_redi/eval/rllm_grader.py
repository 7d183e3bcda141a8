"""The grader of the paper's tables: DeepScaleR's (rllm's) math reward, rule for rule.

The paper scored Tables 1, 2 and 4 with rllm (formerly DeepScaleR). Its reward decides a generation
in four steps, each reproduced here from its published rules:

1. **Extraction.** Only the text after ``</think>`` counts (up to a second ``</think>``, if any): a
   generation without it (cut at the token limit, or never closing its thought) is wrong, and so is
   one whose only ``\\boxed{}`` sits inside the thinking. The answer is the content of the last
   ``\\boxed{...}`` there, braces balanced; ``\\boxed 5`` or an ``\\fbox`` found last give none.
2. **References.** Each reference answer (a benchmark may give several, as OlympiadBench and
   Minerva do: any one matching suffices) is used as written, or, if it holds a ``\\boxed{}``, its
   content.
3. **MATH normalisation** (Hendrycks et al.'s ``mathd`` rule): both strings rewritten (spaces, \\left
   and \\right, dfrac and tfrac, degrees, dollars, percent, a trailing unit in ``\\text{ ...}``,
   ``\\frac12`` and ``a/b`` written as ``\\frac{a}{b}``, ``0.5`` as a half, a short ``x =`` prefix)
   and compared as strings.
4. **Sympy equivalence** (PRM800K's grader), where 3 did not match: both sides normalised again
   (units and words stripped, LaTeX rendered to text by pylatexenc, lower case, integers written
   plainly), split into tuple or interval elements, then element by element: two fractions must be
   written the same (an unreduced one is wrong); an integer must equal an integer exactly; anything
   else must have ``simplify(a - b) == 0``, tried only on expressions with at most two unknown
   letters and without the exponent shapes that can make sympy hang.

``correct(generation, references)`` is what tools/evaluate.py calls for ``--checker rllm``.
tests/eval/test_answers.py holds its verdicts beside math-verify's and the built-in checker's.
"""

from __future__ import annotations

import logging
import re

THINK_END = "</think>"


# ---- 1. extraction ---------------------------------------------------------------------------------

def final_answer(generation: str) -> str | None:
    parts = generation.split(THINK_END)
    return boxed(parts[1]) if len(parts) > 1 else None


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` of ``text`` (None if the last box is an \\fbox, is
    not followed by a brace, or is not closed)."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if text[end] == "}" and depth == 0:
            box = text[start:end + 1]
            return box[len("\\boxed{"):-1] if box.startswith("\\boxed{") else None
    return None


# ---- 3. MATH normalisation -------------------------------------------------------------------------

class _Unnormalisable(Exception):
    """A string the MATH rule cannot rewrite: it is then compared as it is."""


# plain substitutions, in the rule's order
_MATHD_REPLACEMENTS = (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                       ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""))


def mathd_form(answer: str) -> str:
    answer = answer.strip()
    text = re.fullmatch(r"\\text\{(.+?)\}", answer)
    if text:
        answer = text.group(1).strip()
    try:
        return _mathd_rewrite(answer)
    except Exception:  # noqa: BLE001 - _Unnormalisable, or any failure: the rule's own catch-all
        return answer


def _mathd_rewrite(s: str) -> str:
    for old, new in _MATHD_REPLACEMENTS:
        s = s.replace(old, new)
    if "\\text{ " in s:  # a unit on the right, once
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise _Unnormalisable
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s.startswith("."):
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "x = 3", "k=3"
        s = sides[1]
    s = _braced_sqrt(s).replace(" ", "")
    s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_as_frac(s)


def _braced_sqrt(s: str) -> str:
    """\\sqrt3 -> \\sqrt{3}."""
    head, *rest = s.split("\\sqrt")
    for piece in rest:
        if not piece:
            raise _Unnormalisable
        head += "\\sqrt" + (piece if piece[0] == "{" else "{" + piece[0] + "}" + piece[1:])
    return head


def _braced_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72} (a \\frac with fewer than two characters
    after it leaves the whole string as it was)."""
    head, *rest = s.split("\\frac")
    for piece in rest:
        if not piece:
            raise _Unnormalisable
        if piece[0] == "{":
            head += "\\frac" + piece
        elif len(piece) < 2:
            return s
        elif piece[1] == "{":
            head += "\\frac{" + piece[0] + "}" + piece[1:]
        else:
            head += "\\frac{" + piece[0] + "}{" + piece[1] + "}" + piece[2:]
    return head


def _slash_as_frac(s: str) -> str:
    """3/4 -> \\frac{3}{4}, for two plain integers only."""
    parts = s.split("/")
    if len(parts) == 2 and all(re.fullmatch(r"[+-]?\d+", p.strip()) for p in parts):
        try:
            a, b = int(parts[0]), int(parts[1])
        except ValueError:  # more digits than Python converts (4,300): left as written, as the rule does
            return s
        if s == f"{a}/{b}":
            return f"\\frac{{{a}}}{{{b}}}"
    return s


def mathd_equal(given: str, reference: str) -> bool:
    return mathd_form(given) == mathd_form(reference)


# ---- 4. sympy equivalence --------------------------------------------------------------------------

_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month", "year",
          "foot", "feet", "inch", "yard")
_WORDS = ((" or ", " , "), (" and ", " , "), ("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12"))
_RENDERED = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))
_TUPLE_ENDS = "()[]"
_HANGS = ("^{", "^(")  # exponent shapes sympy can spend minutes on
_HANGS_RE = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_FACTORIAL = re.compile(r"[0-9]{4,}\s*!")  # 1000! and up: sympy computes the integer eagerly


def _float_or_none(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _integral(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):  # inf, nan
        return False


def _without_thousands_commas(s: str) -> str:
    """1,234,567 -> 1234567, leaving the commas of tuples alone."""
    while True:
        joined = re.sub(r"(\d),(\d\d\d)($|\D)", r"\1\2\3", s)
        if joined == s:
            return s
        s = joined


def _is_integer_text(s: str) -> bool:
    x = _float_or_none(_without_thousands_commas(s))
    return x is not None and _integral(x)


def _latex_as_text(s: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text  # a dependency; imported when first needed

    logging.getLogger("pylatexenc").setLevel(logging.ERROR)  # its complaints about half-formed LaTeX

    s = s.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    s = LatexNodes2Text().latex_to_text(s)
    for symbol, word in _RENDERED:
        s = s.replace(symbol, word)
    return s.strip()


def sympy_form(s: str) -> str:
    text = re.fullmatch(r"\\text\{(.+?)\}", s)
    if text:
        s = text.group(1)
    s = s.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    for old, new in _WORDS:
        s = s.replace(old, new)
    for unit in _UNITS:
        s = re.sub(f"{unit}(es)?(s)? *(\\^[0-9]+)?", "", s)
    s = re.sub(r"\^ *\\circ", "", s)
    if s[:1] == "{" and s[-1:] == "}":
        s = s[1:-1]
    s = re.sub(r",\\! *", "", s)
    x = _float_or_none(s)
    if x is not None and _integral(x):
        s = str(int(round(x)))
    if "\\" in s:
        try:
            s = _latex_as_text(s)
        except Exception:  # noqa: BLE001 - LaTeX it cannot render stays as it is
            pass
    s = re.sub("- *", "-", s)
    s = re.sub("([0-9]) +([0-9])", r"\1+\2", s)  # a mixed number: 7 3/4 -> 7+3/4
    s = s.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _is_integer_text(s):
        s = str(int(float(s.replace(",", ""))))
    return s


def _elements(s: str) -> list[str]:
    """The elements of a tuple or interval, "(1,2]" -> ["1", "2"]; anything else is one element."""
    s = _without_thousands_commas(s)
    if not s:
        return []
    if len(s) > 2 and s[0] in _TUPLE_ENDS and s[-1] in _TUPLE_ENDS and not any(c in s[1:-1] for c in _TUPLE_ENDS):
        return [e.strip() for e in s[1:-1].split(",")]
    return [s]


def _is_fraction_text(s: str) -> bool:
    return re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", s) is not None


def _evaluable(expr: str) -> bool:
    """The rule's guards (at most two unknown letters, none of its exponent shapes), with an exponent
    written ``**`` read as ``^`` (the rule checks ``^`` only, and its sympy then evaluates a tower
    such as 9**9**9 for ever) and factorials of 1000 and more refused as well."""
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    power = expr.replace("**", "^")
    return (len(letters) <= 2 and not any(h in power for h in _HANGS) and not any(r.search(power) for r in _HANGS_RE)
            and not _FACTORIAL.search(expr))


def _sympy_zero(reference: str, given: str) -> bool:
    import sympy
    from sympy.parsing import sympy_parser

    expr = f"({reference})-({given})"
    if not _evaluable(expr):
        return False
    try:
        parsed = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=(
            sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,)))
        return sympy.simplify(parsed) == 0
    except Exception:  # noqa: BLE001 - anything sympy cannot parse or decide is not equal
        return False


def _element_equal(reference: str, given: str) -> bool:
    if _is_fraction_text(reference) and _is_fraction_text(given):
        return reference == given  # an unreduced fraction is not the answer
    if _is_integer_text(reference) != _is_integer_text(given):
        return False  # an integer answer is matched exactly, never by simplification
    return _sympy_zero(reference, given)


def sympy_equal(given: str, reference: str) -> bool:
    ref, got = sympy_form(reference), sympy_form(given)
    if ref == got:
        return True
    if not got:
        return False
    ref_elements, got_elements = _elements(ref), _elements(got)
    if len(ref_elements) > 1 and (ref[0] != got[0] or ref[-1] != got[-1]):
        return False  # another kind of interval or tuple
    if len(ref_elements) != len(got_elements):
        return False
    return all(_element_equal(r, g) for r, g in zip(ref_elements, got_elements))


# ---- the reward's decision -------------------------------------------------------------------------

def equal(given: str, reference: str) -> bool:
    return mathd_equal(given, reference) or sympy_equal(given, reference)


def correct(generation: str, references) -> bool:
    given = final_answer(generation)
    if given is None:
        return False
    refs = [str(r) for r in (references if isinstance(references, (list, tuple)) else [references])]
    refs = [boxed(r) if "\\boxed" in r else r for r in refs]
    return any(equal(given, r) for r in refs if r is not None)
