"""The paper's benchmarks by name: where each lives on the Hugging Face Hub, which columns hold its
problem and answer, and how many problems it has. The five of its tables, and beside them AIME 2025
(what users now ask for next to AIME 2024), the 40-problem AMC 2023 set, and GPQA-Diamond (its
out-of-domain check, Table 5) as multiple choice.

``prepare(name, source)`` returns the benchmark as the evaluator's rows ``{"problem", "answer",
...}``, read from the Hub (``source`` None, through ``datasets``) or from a local copy: a data file
(JSON lines, parquet, Arrow), a directory saved by ``datasets``, or a download of the dataset's
repository (its data files are found by the benchmark's config and split names). The row count must
be the known one: a wrong file, split or config is an error, not a smaller benchmark.

The paper's reference scored the five of its tables against rllm's own test sets
(``rllm/data/test/math/{math,aime,amc,minerva,olympiad_bench}.json``: one JSON array each, columns
``problem`` and ``answer``), whose answers are not always the Hub's: Minerva's are lists of accepted
forms. Such a file is read as well (the rllm layout, recognised by its columns), its lists kept as
lists. Answers are kept as written, ``$`` included, as the reference passed them to its grader.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass

from ..cli import UserError
from ..data.raw import RawDataError, expand_inputs, hub_spec, read_rows


class BenchmarkSourceError(UserError):
    pass


@dataclass(frozen=True)
class Benchmark:
    repo: str  # the Hub dataset
    split: str
    problem: str  # its columns
    answer: str
    size: int
    config: str | None = None
    wrong: tuple[str, ...] = ()  # multiple choice: the columns of the wrong options (the answer becomes a letter)


BENCHMARKS = {
    "math500": Benchmark("HuggingFaceH4/MATH-500", "test", "problem", "answer", 500),
    "aime24": Benchmark("HuggingFaceH4/aime_2024", "train", "problem", "answer", 30),
    # the paper's AMC23: the 83 AMC 12 problems of 2022 and 2023 that DeepScaleR / rllm evaluate (its
    # pass@16 values are whole counts out of 83, never out of 40: docs/evaluation.md)
    "amc23": Benchmark("AI-MO/aimo-validation-amc", "train", "problem", "answer", 83),
    "amc23_40": Benchmark("math-ai/amc23", "test", "question", "answer", 40),  # AMC 2023 alone
    "minerva": Benchmark("math-ai/minervamath", "test", "question", "answer", 272),
    "olympiadbench": Benchmark("Hothan/OlympiadBench", "train", "question", "final_answer", 675,
                               config="OE_TO_maths_en_COMP"),  # open-ended, text-only, maths, English
    "aime25": Benchmark("yentinglin/aime_2025", "train", "problem", "answer", 30),
    "gpqa_diamond": Benchmark("Idavidrein/gpqa", "train", "Question", "Correct Answer", 198, config="gpqa_diamond",
                              wrong=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")),
}
# LightEval's GPQA prompt (after simple-evals), which the multiple-choice rows carry as their problem;
# evaluate them with --prompt chat --checker letter
GPQA_TEMPLATE = ("Answer the following multiple choice question. The last line of your response should be of the "
                 "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
                 "step before answering.\n\n{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}")
LETTERS = "ABCD"

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")


RLLM_COLUMNS = ("problem", "answer")  # the layout of rllm's test sets, every benchmark alike


def answer_text(value):
    """A reference answer as the evaluator's: a string, whole floats (AMC stores 27.0) as integers,
    otherwise as written (OlympiadBench's ``$k=1$`` keeps its ``$``: the reference's grader saw
    them, and they change its verdict); several answers (OlympiadBench's and rllm's Minerva lists)
    a list of them, any of which is right (as the paper's grader takes them)."""
    if isinstance(value, (list, tuple)):
        texts = [answer_text(v) for v in value]
        return texts[0] if len(texts) == 1 else texts
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def describe() -> str:
    """One line per benchmark, from the table: what ``--help`` lists, so it cannot drift."""
    return "\n".join(f"  {name:14s}{b.repo}{', config ' + b.config if b.config else ''}, split {b.split}: "
                     f"{b.size} problems{' (multiple choice)' if b.wrong else ''}" for name, b in BENCHMARKS.items())


def _answers(answer) -> list:
    return answer if isinstance(answer, list) else [answer]


def key_differences(rows: list[dict], other: list[dict]) -> dict:
    """How two answer keys of one benchmark differ (say rllm's and the Hub's Minerva), problem by
    problem, matched by the problem's text (spacing aside): how many problems both hold, how many of
    those have their answers written differently, and how many of those the rllm grader would score
    wrong when ``other``'s first answer is boxed against ``rows``' key."""
    from .answers import is_correct  # the grader only for this comparison

    def key(text: str) -> str:
        return " ".join(text.split())

    theirs = {key(r["problem"]): r["answer"] for r in other}
    common = [(r["answer"], theirs[key(r["problem"])]) for r in rows if key(r["problem"]) in theirs]
    written = [(a, b) for a, b in common if sorted(_answers(a)) != sorted(_answers(b))]
    refused = [(a, b) for a, b in written if not is_correct(f"</think> \\boxed{{{_answers(b)[0]}}}", a, "rllm")]
    return {"problems": len(rows), "in_both": len(common), "written_differently": len(written),
            "refused_by_rllm": len(refused)}


def local_files(source: str, bench: Benchmark) -> list[tuple[str, str]]:
    """The data files of ``bench`` in a local copy: the file itself, a saved dataset, or the files of
    a repository download that belong to its config (if any) and split."""
    if not os.path.isdir(source) or os.path.exists(os.path.join(source, "state.json")):
        return expand_inputs([source])
    if os.path.exists(os.path.join(source, "dataset_dict.json")):  # DatasetDict.save_to_disk
        return expand_inputs([os.path.join(source, bench.split)])
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(source) for f in files
                   if f.endswith(DATA_SUFFIXES) and f not in ("dataset_info.json", "state.json")
                   and not any(part.startswith(".") and part != "." for part in os.path.relpath(d, source).split(os.sep)))
    if bench.config:
        found = [f for f in found if bench.config in os.path.relpath(f, source)]
    in_split = [f for f in found if os.path.basename(f).startswith(bench.split)]
    found = in_split or found
    if not found:
        what = f"config {bench.config}, " if bench.config else ""
        raise BenchmarkSourceError(f"{source}: no data file ({what}split {bench.split}; {', '.join(DATA_SUFFIXES)})")
    return expand_inputs(found)


def prepare(name: str, source: str | None = None) -> list[dict]:
    if name not in BENCHMARKS:
        raise BenchmarkSourceError(f"unknown benchmark {name!r}: one of {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    try:
        files = local_files(source, bench) if source else [(hub_spec(bench.repo, bench.config, bench.split), "hub")]
        rows = []
        shuffle = random.Random(0)  # where the right option goes: the same order on every machine
        for raw in read_rows(files):
            if raw.record is None:
                raise BenchmarkSourceError(f"{raw.file}: row {raw.row}: {raw.error}")
            row = _row(raw.record, bench, f"{raw.file}: row {raw.row}")
            rows.append(_multiple_choice(row, raw.record, bench, shuffle) if bench.wrong else row)
    except RawDataError as e:
        raise BenchmarkSourceError(str(e)) from None
    if len(rows) != bench.size:
        where = source or bench.repo
        raise BenchmarkSourceError(f"{where}: {len(rows)} problems, but {name} has {bench.size} ({bench.repo}"
                                   f"{', config ' + bench.config if bench.config else ''}, split {bench.split}): "
                                   "a different file, split or version")
    return rows


def _multiple_choice(row: dict, record: dict, bench: Benchmark, shuffle: random.Random) -> dict:
    """The question with its four options (the right one at a seeded random place) as the problem,
    the right option's letter as the answer."""
    options = [str(record[c]).strip() for c in bench.wrong]
    right = shuffle.randrange(4)
    options.insert(right, str(row["answer"]).strip())
    problem = GPQA_TEMPLATE.format(question=row["problem"].strip(), **dict(zip(LETTERS, options)))
    return {**row, "problem": problem, "answer": LETTERS[right]}


def _row(record: dict, bench: Benchmark, where: str) -> dict:
    if bench.problem not in record and not bench.wrong and all(c in record for c in RLLM_COLUMNS):
        bench = dataclasses.replace(bench, problem=RLLM_COLUMNS[0], answer=RLLM_COLUMNS[1])  # rllm's test set
    for column in (bench.problem, bench.answer, *bench.wrong):
        if record.get(column) in (None, "", []):
            raise BenchmarkSourceError(f"{where}: column {column!r} is missing or empty (columns: {', '.join(record)})")
    if not isinstance(record[bench.problem], str):
        raise BenchmarkSourceError(f"{where}: column {bench.problem!r} is not text")
    kept = {k: v for k, v in record.items()  # scalar metadata (level, subject, id) rides along
            if k not in (bench.problem, bench.answer, "problem", "answer", *bench.wrong)
            and isinstance(v, (str, int, float, bool))}
    return {"problem": record[bench.problem], "answer": answer_text(record[bench.answer]), **kept}
