"""Evaluate a model on a benchmark file: prompts, sampling, answer checks, pass@1 with SEM.

Benchmark files are JSON lines ``{"problem": "...", "answer": "..."}`` (other keys are kept in the
results). Problems are split over data-parallel ranks; every TP rank of a group generates together.
"""

from __future__ import annotations

import hashlib
import json
import time

from tqdm import tqdm

from ..cli import UserError
from ..parallel.collectives import all_gather_objects
from .answers import predicted_answer
from .checking import check_answers
from .generate import generate_samples, new_token_limits
from .metrics import summarize
from .protocol import PROMPT_STYLES, Protocol

# The prompt the paper used (Appendix C.5, after Open-R1 / LightEval's MATH template), byte for byte:
# two spaces after "clearly.", as in the reference's evaluations.
LIGHTEVAL_TEMPLATE = (
    "Solve the following math problem efficiently and clearly.  The last line of your response should be "
    "of the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is correct' "
    "(without quotes) where ANSWER is just the final number or expression that solves the problem. Think "
    "step by step before answering.\n\n{question}"
)
FORCED_THINK = "<think>\n"  # how the paper's models start every answer (their chat template forces it)


class BenchmarkError(UserError):
    pass


def load_benchmark(path: str, max_problems: int | None = None) -> list[dict]:
    problems = []
    try:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise BenchmarkError(f"{path}: line {i}: not UTF-8 (byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BenchmarkError(f"{path}: line {i}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise BenchmarkError(f"{path}: line {i}: a JSON {type(row).__name__}, not an object with "
                                         "problem and answer")
                if not isinstance(row.get("problem"), str) or not row["problem"].strip():
                    raise BenchmarkError(f"{path}: line {i}: field 'problem' is missing or not a non-empty string")
                answers = row.get("answer") if isinstance(row.get("answer"), list) else [row.get("answer")]
                if not answers or any(isinstance(a, bool) or not isinstance(a, (str, int, float)) or not str(a).strip()
                                      for a in answers):  # an empty answer would match an empty \boxed{}
                    raise BenchmarkError(f"{path}: line {i}: field 'answer' is missing, empty or not a string, a "
                                         "number or a list of them")
                row["answer"] = [str(a) for a in answers] if isinstance(row["answer"], list) else str(answers[0])
                problems.append(row)
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: no such benchmark file") from None
    if not problems:
        raise BenchmarkError(f"{path}: no problems")
    if max_problems is not None and max_problems < 1:
        raise BenchmarkError(f"{path}: the number of problems to take must be at least 1, got {max_problems}")
    return problems[:max_problems] if max_problems else problems


def benchmark_digest(problems: list[dict]) -> str:
    """What a result was computed from: the problems and answers taken (the file's content and the
    subset), so that a result is never reused for another benchmark under the same name."""
    text = json.dumps([[p["problem"], p["answer"]] for p in problems], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_text(tokenizer, problem: str, style: str, force_think: bool) -> str:
    """The prompt as text (what an inference engine such as vLLM takes)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}")
    if style == "raw":
        text = problem
    else:
        content = LIGHTEVAL_TEMPLATE.format(question=problem) if style == "lighteval" else problem
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    if force_think and not text.endswith(FORCED_THINK):
        if "<think>" in str(tokenizer.chat_template):
            # a template that writes thinking blocks itself (Qwen3's): the block opens after the
            # assistant header's newline, as in the traces its SFT data was rendered with
            text += FORCED_THINK
        else:
            # the generation prompt of the paper's models, "<|im_start|>assistant<think>\n": the
            # assistant header's newline replaced by "<think>\n"
            text = text.removesuffix("\n") + FORCED_THINK
    return text


def build_prompt(tokenizer, problem: str, style: str, force_think: bool) -> list[int]:
    return tokenizer(prompt_text(tokenizer, problem, style, force_think), add_special_tokens=False)["input_ids"]


def stop_tokens(tokenizer) -> set[int]:
    stops = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        stops.add(im_end)
    return {s for s in stops if s is not None}


def evaluate(model, tokenizer, problems: list[dict], protocol: Protocol = Protocol(), seed: int = 0,
             batch_size: int = 32, progress: bool = False) -> tuple[list[dict], dict]:
    """(one result per problem: its ``generations``, their ``lengths`` in tokens, the ``predicted``
    answers and the ``correct`` list of ``protocol.samples`` booleans; the summary, which records the
    protocol). ``progress``: a bar on rank 0 (generations done, tokens/s, ETA)."""
    parallel, samples = model.parallel, protocol.samples
    temperature, top_p = (0.0, 1.0) if protocol.greedy else (protocol.temperature, protocol.top_p)
    # generation is not split along tokens: the CP ranks of a DP rank take problems of their own
    mine = list(range(parallel.dp_cp_rank, len(problems), parallel.dp_cp_size))
    check_gold(problems, protocol)
    every = [build_prompt(tokenizer, p["problem"], protocol.prompt, protocol.force_think) for p in problems]
    positions = model.cfg.max_position_embeddings
    too_long = [i for i, prompt in enumerate(every) if len(prompt) >= positions]
    if too_long:  # found by every rank alike (all prompts are checked), before any generation
        i = too_long[0]
        raise BenchmarkError(f"problem {i + 1} of the benchmark: its prompt has {len(every[i])} tokens, the model "
                             f"{positions} positions ({len(too_long)} such problems)")
    prompts = [every[i] for i in mine]
    stops = stop_tokens(tokenizer)
    texts, lengths = {i: [] for i in mine}, {i: [] for i in mine}
    bar = tqdm(total=samples * len(mine), desc="generating", unit="gen", disable=not (progress and parallel.rank == 0),
               dynamic_ncols=True)
    start, tokens = time.perf_counter(), 0

    def advance(new_tokens: int):
        nonlocal tokens
        tokens += new_tokens
        bar.set_postfix(tokens_per_s=f"{tokens / (time.perf_counter() - start):,.0f}", refresh=False)
        bar.update(1)

    with bar:  # every (problem, sample) job in one queue: sample j of every problem is the P_j of the SEM
        outs = generate_samples(model, prompts, samples, protocol.max_new_tokens, stops, temperature, top_p, seed,
                                batch_size, prompt_ids=mine, on_done=advance)
        limits = new_token_limits(model, prompts, protocol.max_new_tokens)
        capped = {}  # generations cut where the model's positions end, before max_new_tokens
        for i, generations, limit in zip(mine, outs, limits):
            texts[i] = [tokenizer.decode(ids, skip_special_tokens=True) for ids in generations]
            lengths[i] = [len(ids) for ids in generations]
            capped[i] = [j for j, ids in enumerate(generations)
                         if limit < protocol.max_new_tokens and len(ids) == limit and ids[-1] not in stops]
    results = result_rows(problems, mine, texts, lengths, protocol, capped)
    if parallel.dp_cp_size > 1:
        gathered = all_gather_objects(parallel, results, parallel.dp_cp_group)
        results = sorted((r for part in gathered for r in part), key=lambda r: r["index"])
    return results, summary_of(results, protocol)


def check_gold(problems: list[dict], protocol: Protocol) -> None:
    """Every problem has what the protocol compares with (before anything is generated)."""
    missing = [i for i, p in enumerate(problems) if p.get(protocol.gold) in (None, "", [])]
    if missing:
        hint = (" (LightEval's MATH-500 gold: prepare MATH-500 from HuggingFaceH4/MATH-500, whose solution column "
                "is kept, or score the boxed answer: --protocol intermediate_boxed, or --gold answer)"
                if protocol.gold == "solution" else "")
        raise BenchmarkError(f"problem {missing[0] + 1} of the benchmark has no {protocol.gold!r} to compare with "
                             f"({len(missing)} such problems){hint}")


def result_rows(problems: list[dict], indices, texts: dict, lengths: dict, protocol: Protocol,
                capped: dict | None = None) -> list[dict]:
    """One row per problem index: the problem's fields, its generations (text and length in
    tokens), the boxed answers, which are correct, which of them hit the checking time bound
    (``bounded``: indices of generations, scored wrong; checking.py) and, where the built-in engine
    cut some where the model's positions end, which (``capped``)."""
    indices = list(indices)
    checker = protocol.checker
    tasks = [(t, problems[i][protocol.gold]) for i in indices for t in texts[i]]
    verdicts = iter(check_answers(tasks, checker))
    rows = []
    for i in indices:
        mine = [next(verdicts) for _ in texts[i]]
        rows.append({**problems[i], "index": i, "generations": texts[i], "lengths": lengths[i],
                     "predicted": [predicted_answer(t, checker) for t in texts[i]],
                     "correct": [v.correct for v in mine], "bounded": [j for j, v in enumerate(mine) if v.bounded],
                     **({"capped": capped[i]} if capped and capped[i] else {})})
    return rows


def summary_of(results: list[dict], protocol: Protocol) -> dict:
    """pass@1, its SEM and pass@k, the protocol, how many answers hit the checking time bound and how
    many generations were cut where the model's positions end."""
    return {**summarize([r["correct"] for r in results], protocol.sem_ddof), "protocol": protocol.record(),
            "bounded_answers": sum(len(r.get("bounded", ())) for r in results),
            "capped_generations": sum(len(r.get("capped", ())) for r in results)}


def score(problems: list[dict], generations: list[list[str]], lengths: list[list[int]],
          protocol: Protocol = Protocol()) -> tuple[list[dict], dict]:
    """evaluate()'s results and summary for generations made elsewhere (e.g. by vLLM):
    ``generations[i][j]`` is sample j of problem i, ``lengths[i][j]`` its length in tokens."""
    if len(generations) != len(problems) or any(len(g) != protocol.samples for g in generations):
        raise ValueError(f"need {protocol.samples} generations for each of the {len(problems)} problems")
    check_gold(problems, protocol)
    rows = result_rows(problems, range(len(problems)), dict(enumerate(generations)), dict(enumerate(lengths)),
                       protocol)
    return rows, summary_of(rows, protocol)
