"""A synthetic teacher corpus in the OpenR1-Math-Raw schema, for the demo and the tests.

Each problem adds two n-digit numbers. A "teacher" generation works digit by digit from the
right, ``d1+d2+carry=s;`` per column, then states the answer in ``\\boxed{}``. Correct generations
follow the rule; flawed ones plant one slip, as a weaker solver would make: a column sum off by
one, or a carry dropped. The verifier labels are the truth with a little noise, so that the two
verifiers sometimes disagree (the paper counts a trace as correct only when both say so).
"""

from __future__ import annotations

import json
import random

from ..atomic import atomic_file

SOURCES = ("olympiads", "amc_aime", "aops_forum", "cn_k12")


def solve(a: int, b: int, digits: int, slip: tuple[str, int] | None = None) -> tuple[str, int]:
    """The digit-by-digit trace of a + b and its final answer, with an optional planted slip
    ("sum" or "carry", at a column)."""
    xs, ys = str(a).zfill(digits)[::-1], str(b).zfill(digits)[::-1]
    carry, steps, out = 0, [], []
    for col in range(digits):
        x, y = int(xs[col]), int(ys[col])
        s = x + y + carry
        if slip == ("sum", col):
            s = s + 1 if s % 10 != 9 else s - 1
        steps.append(f"{x}+{y}+{carry}={s}")
        out.append(s % 10)
        carry = s // 10
        if slip == ("carry", col):
            carry = 0
    if carry:
        out.append(carry)
    answer = int("".join(str(d) for d in reversed(out)))
    return ";".join(steps) + f";ans {answer}. The answer is \\boxed{{{answer}}}.", answer


def estimate(a: int, b: int) -> tuple[str, int]:
    """The decoy method of the toy study's task B: both numbers rounded to thousands and added. Its
    tokens (``est``, ``~``) never occur in a digit-by-digit trace; it is wrong unless the two
    rounding errors cancel (draw_problems(decoy_safe=True) leaves those problems out)."""
    ra, rb = round(a, -3), round(b, -3)
    answer = ra + rb
    return f"est {a}~{ra} {b}~{rb};{ra}+{rb}={answer};ans {answer}. The answer is \\boxed{{{answer}}}.", answer


def problem_text(a: int, b: int) -> str:
    return f"Compute {a}+{b}."


def draw_problems(rng: random.Random, count: int, digits: int, exclude=(), decoy_safe: bool = False) -> list[tuple[int, int]]:
    """``count`` distinct pairs of D-digit numbers, none in ``exclude``; with ``decoy_safe`` none
    where the estimate is right (both rounding errors zero, or cancelling)."""
    seen, out = set(exclude), []
    while len(out) < count:
        a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
        if (a, b) in seen or (decoy_safe and estimate(a, b)[1] == a + b):
            continue
        seen.add((a, b))
        out.append((a, b))
    return out


def schema_row(a: int, b: int, generations: list[str], correct: list[bool]) -> dict:
    """One OpenR1-Math-Raw row with exact verifier labels."""
    return {"problem": problem_text(a, b), "answer": str(a + b), "generations": generations,
            "correctness": {"llama_verification": correct, "math_verify_answer": correct,
                            "math_verify_reparsed_answer": correct},
            "problem_is_valid": "Yes", "source": "olympiads", "problem_type": "Algebra"}


def make_row(rng: random.Random, digits: int, generations: int, p_correct: float) -> dict:
    a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
    truth = a + b
    texts, llama, mv, mv_reparsed = [], [], [], []
    for _ in range(generations):
        slip = None
        if rng.random() > p_correct:
            slip = (rng.choice(("sum", "carry")), rng.randrange(digits))
        text, answer = solve(a, b, digits, slip)
        right = answer == truth  # a dropped carry in a column without one changes nothing
        texts.append(text)
        llama.append(right != (rng.random() < 0.05))  # the LLM judge errs now and then
        verified = right != (rng.random() < 0.03)
        mv.append(verified)
        mv_reparsed.append(verified != (rng.random() < 0.02))
    return {
        "problem": problem_text(a, b),
        "answer": str(truth),
        "generations": texts,
        "correctness": {"llama_verification": llama, "math_verify_answer": mv,
                        "math_verify_reparsed_answer": mv_reparsed},
        "problem_is_valid": "Yes" if rng.random() > 0.02 else "No",
        "source": rng.choice(SOURCES),
        "problem_type": "Algebra",
    }


def write_corpus(path: str, rows: int, digits: int = 5, generations: int = 4, p_correct: float = 0.6,
                 seed: int = 0) -> None:
    """Write ``rows`` raw rows as JSON lines."""
    rng = random.Random(seed)
    with atomic_file(path) as f:
        for _ in range(rows):
            f.write(json.dumps(make_row(rng, digits, generations, p_correct)) + "\n")


def write_benchmark(path: str, problems: int, digits: int = 5, seed: int = 1) -> None:
    """Held-out evaluation problems, one ``{"problem", "answer"}`` per line."""
    rng = random.Random(seed)
    with atomic_file(path) as f:
        for _ in range(problems):
            a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
            f.write(json.dumps({"problem": problem_text(a, b), "answer": str(a + b)}) + "\n")


def tokenizer_corpus(digits: int = 5, samples: int = 400, seed: int = 2):
    """Texts to train the demo tokenizer on: the chat scaffolding, prompts and traces of the task."""
    from ..fixtures import DEFAULT_SYSTEM_PROMPT

    for _ in range(50):  # frequent enough for BPE to merge the system prompt into few tokens
        yield f"system\n{DEFAULT_SYSTEM_PROMPT}\nuser\nassistant\n"
    rng = random.Random(seed)
    for _ in range(samples):
        row = make_row(rng, digits, 2, 0.5)
        yield row["problem"]
        yield from row["generations"]
