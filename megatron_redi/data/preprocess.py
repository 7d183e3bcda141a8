"""Raw teacher traces -> D_SFT (correct traces) and D_Pref (correct, incorrect pairs), tokenised.

The rules, after the paper's Section 3.1 and its reference implementation:

- a row is kept when ``problem_is_valid`` is "yes" (any case), its ``source`` is not excluded
  (default cn_k12), and its verifier lists are as long as its generations;
- a generation is correct when both verifiers say so (``llama_verification`` and
  ``math_verify_reparsed_answer``; ``--correctness either`` accepts one), otherwise incorrect;
  an empty generation is one like any other (the reference took them);
- D_SFT takes the first correct generation of a row, in the row's own order, and D_Pref the first
  correct and the first incorrect one, as the reference did (its seeded shuffle reorders rows, which
  changes no choice); ``shuffle_generations`` visits them in a seeded random order instead, a
  departure from the paper;
- the prompt is the tokenizer's chat template applied to the problem (its default system prompt
  included) with the assistant turn opened; the response is the generation, the template's
  end-of-turn text and EOS; only response tokens are trained on;
- length limits after templating: pairs with a prompt over 800 tokens or either response over
  19,000 are dropped (the paper's filter, on pairs only), the lengths counted as the reference's
  length study counted them: the user turn without the generation prompt, plus one; a response
  rendered as a conversation of its own (the template's default system prompt and the assistant
  header around it), plus one. SFT sequences over 32,768 tokens in all are truncated to it, as the
  reference's trainer did (``drop_long_sft`` drops them instead).

Output (``data/dataset.py`` reads it): ``sft/`` and ``pairs/``, each a flat ``tokens.bin`` (uint32)
and an ``items.npy`` table (offsets, lengths, provenance); ``meta.json`` (source names, options); and
``report.json`` with ``rows_read``, ``sft_rows``, ``sft_truncated``, ``pairs_before_length_filter``,
``pairs``, ``dropped`` (reason -> rows) and length percentiles; and ``tokenizer/``, a copy of the tokenizer the ids belong to. The directory appears
only when complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections import Counter, deque
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_directory
from ..cli import UserError
from ..settings import ConfigError, tokenizer_directory
from .raw import RawDataError, RawRow, count_rows, expand_inputs, local_inputs, read_rows

FORMAT_VERSION = 1
REQUIRED = ("problem", "generations", "correctness", "problem_is_valid", "source")
VERIFIERS = ("llama_verification", "math_verify_reparsed_answer")

SFT_ITEM = np.dtype([("offset", "i8"), ("prompt_len", "i4"), ("response_len", "i4"), ("source", "i4"),
                     ("file", "i4"), ("row", "i8"), ("gen", "i4")])
PAIR_ITEM = np.dtype([("offset", "i8"), ("prompt_len", "i4"), ("chosen_len", "i4"), ("rejected_len", "i4"),
                      ("source", "i4"), ("file", "i4"), ("row", "i8"), ("chosen_gen", "i4"), ("rejected_gen", "i4")])


class StrictModeError(UserError):
    """A bad row under --strict: names the file, the row and what is wrong."""


@dataclass(frozen=True)
class Options:
    tokenizer: str
    max_prompt_tokens: int = 800
    max_response_tokens: int = 19000
    max_sft_tokens: int = 32768
    exclude_sources: tuple[str, ...] = ("cn_k12",)
    seed: int = 0
    correctness: str = "both"  # both | either
    # The reference takes the first accepted and the first rejected generation in the row's own
    # order (its seeded shuffle reorders rows, which changes no choice). True visits each row's
    # generations in a seeded random order instead: a departure from the paper.
    shuffle_generations: bool = False
    # The reference's trainer truncates SFT sequences to the limit; True drops them instead.
    drop_long_sft: bool = False
    strict: bool = False


# ---- choosing generations ---------------------------------------------------------------------

def _label(value) -> bool | None:
    """A verifier label as a bool; None for a value of the wrong type."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False  # not verified counts as not correct
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def choose(record: dict, row_key: int, opts: Options) -> tuple[list[str], int | None, int | None]:
    """(reasons the row or its pair was dropped, chosen generation, rejected generation).

    Raises ValueError(reason, message) for a malformed row."""
    for name in REQUIRED:
        if name not in record or record[name] is None:
            raise ValueError("missing_field", f"field {name!r} is missing")
    gens, corr = record["generations"], record["correctness"]
    if not isinstance(record["problem"], str) or not record["problem"].strip():
        raise ValueError("wrong_type", "field 'problem' must be a non-empty string")
    if not isinstance(gens, list) or not all(isinstance(g, str) for g in gens):
        raise ValueError("wrong_type", "field 'generations' must be a list of strings")
    if not isinstance(corr, dict):
        raise ValueError("wrong_type", "field 'correctness' must be a struct of lists")
    if not isinstance(record["source"], str):
        raise ValueError("wrong_type", "field 'source' must be a string")
    labels = []
    for name in VERIFIERS:
        values = corr.get(name)
        if values is None:
            raise ValueError("missing_field", f"field 'correctness.{name}' is missing")
        if not isinstance(values, list):
            raise ValueError("wrong_type", f"field 'correctness.{name}' must be a list")
        if len(values) != len(gens):
            raise ValueError("verifier_length_mismatch",
                             f"correctness.{name} has {len(values)} labels for {len(gens)} generations")
        parsed = [_label(v) for v in values]
        if None in parsed:
            raise ValueError("wrong_type", f"correctness.{name}[{parsed.index(None)}] is not a boolean")
        labels.append(parsed)
    if str(record["problem_is_valid"]).strip().lower() != "yes":
        return ["invalid_problem"], None, None
    if record["source"] in opts.exclude_sources:
        return ["excluded_source"], None, None

    combine = all if opts.correctness == "both" else any
    order = list(range(len(gens)))
    if opts.shuffle_generations:
        random.Random(opts.seed * 1_000_003 + row_key).shuffle(order)
    # an empty generation is a generation like any other, as the reference took them
    chosen = next((i for i in order if combine(lab[i] for lab in labels)), None)
    rejected = next((i for i in order if not combine(lab[i] for lab in labels)), None)
    reasons = []
    if chosen is None:
        return reasons + ["no_correct_generation"], None, None
    if rejected is None:
        reasons.append("no_incorrect_generation")
    return reasons, chosen, rejected


# ---- tokenising ---------------------------------------------------------------------------------

class Templater:
    """The chat template's prompt and the response suffix (end-of-turn text + EOS) of a tokenizer."""

    def __init__(self, tokenizer_path: str):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_directory(tokenizer_path))
        if self.tok.eos_token_id is None:
            raise ConfigError(f"{tokenizer_path}: the tokenizer has no EOS token")
        if not self.tok.chat_template:
            raise ConfigError(f"{tokenizer_path}: the tokenizer has no chat template")
        # What the template writes after an assistant message: "<|im_end|>\n" for Qwen's.
        probe = "\x00probe\x00"
        opened = self._render([{"role": "user", "content": "q"}], True)
        closed = self._render([{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}], False)
        if not closed.startswith(opened) or probe not in closed:
            raise ConfigError(f"{tokenizer_path}: the chat template does not render an assistant turn "
                             "as a continuation of the generation prompt")
        self.end_of_turn = closed[closed.index(probe) + len(probe):]
        # No token covers more characters than its longest vocabulary entry has (byte-level and
        # sentencepiece entries spell at least one symbol per character), so a text longer than
        # n times that certainly has more than n tokens: refused without tokenising it, which
        # bounds memory whatever a row holds.
        self.max_chars_per_token = max(map(len, self.tok.get_vocab()))

    def _render(self, messages, add_generation_prompt):
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _ids(self, text):
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _fits(self, text: str, max_tokens: int | None) -> bool:
        return max_tokens is None or len(text) <= max_tokens * self.max_chars_per_token

    def prompt(self, problem: str, max_tokens: int | None = None) -> list[int] | None:
        """The templated prompt's ids; None when the problem alone is certainly over max_tokens."""
        if not self._fits(problem, max_tokens):
            return None
        return self._ids(self._render([{"role": "user", "content": problem}], True))

    def response(self, text: str, max_tokens: int | None = None) -> list[int] | None:
        """The response's ids (end-of-turn and EOS included); None when certainly over max_tokens."""
        if not self._fits(text, max_tokens):
            return None
        ids = self._ids(text + self.end_of_turn)
        return ids if ids and ids[-1] == self.tok.eos_token_id else ids + [self.tok.eos_token_id]

    def reference_prompt_length(self, problem: str) -> int:
        """The prompt length the paper's pair filter compared (its length study): the user turn
        rendered without the generation prompt, plus one."""
        return len(self._ids(self._render([{"role": "user", "content": problem}], False))) + 1

    def reference_response_length(self, text: str, max_tokens: int) -> int | None:
        """The response length the paper's pair filter compared: the response rendered as a
        conversation of its own (so with the template's default system prompt and the assistant
        header), plus one; None when certainly over ``max_tokens``."""
        if not self._fits(text, max_tokens):
            return None
        return len(self._ids(self._render([{"role": "assistant", "content": text}], False))) + 1

    def response_prefix(self, text: str, max_tokens: int) -> list[int]:
        """The first ``max_tokens`` ids of a response too long to keep whole (no end-of-turn, no
        EOS: it is cut). Only a prefix of the text that certainly holds them is tokenised; a word
        cut at that prefix's end can change only the ids after it, which are beyond the limit
        unless that one word alone spans more tokens than the rest of the prefix."""
        return self._ids(text[:max_tokens * self.max_chars_per_token])[:max_tokens]


_worker: dict = {}


def _init_worker(opts: Options, templater: Templater | None = None):
    _worker["opts"], _worker["templater"] = opts, templater or Templater(opts.tokenizer)


def _process(batch: list[tuple[int, int, dict]]) -> list[dict]:
    """Worker: choose and tokenise a batch of (file index, row, record)."""
    opts, templater = _worker["opts"], _worker["templater"]
    out = []
    for file_idx, row, record in batch:
        res = {"file": file_idx, "row": row, "drop": []}
        try:
            reasons, c, r = choose(record, file_idx * 10**9 + row, opts)
        except ValueError as e:
            res["error"] = e.args
            out.append(res)
            continue
        res["drop"] = reasons
        if c is not None:
            cap = opts.max_sft_tokens  # no sequence is kept beyond it: longer texts are not tokenised whole
            prompt = templater.prompt(record["problem"], cap)
            if prompt is None or len(prompt) >= cap:  # not even one response token would fit
                res["drop"].append("sft_too_long")
                if r is not None:
                    res["drop"].append("prompt_too_long")
                out.append(res)
                continue
            chosen = templater.response(record["generations"][c], cap)
            long_chosen = chosen is None or len(prompt) + len(chosen) > cap
            if long_chosen and opts.drop_long_sft:
                res["drop"].append("sft_too_long")
            elif long_chosen:  # truncated to the limit, as the reference's trainer did
                res["sft_response"] = templater.response_prefix(record["generations"][c], cap - len(prompt))
            res.update(source=record["source"], prompt=prompt, chosen=chosen, chosen_gen=c, pair_candidate=r is not None)
            if r is not None:  # the paper's length filter, on pairs only, counting as it counted
                limit = opts.max_response_tokens
                lengths = [templater.reference_response_length(record["generations"][i], limit) for i in (c, r)]
                if templater.reference_prompt_length(record["problem"]) > opts.max_prompt_tokens:
                    res["drop"].append("prompt_too_long")
                elif chosen is None or None in lengths or max(lengths) > limit:
                    res["drop"].append("response_too_long")
                else:
                    res.update(rejected=templater.response(record["generations"][r]), rejected_gen=r)
        out.append(res)
    return out


# ---- writing ------------------------------------------------------------------------------------

class _Store:
    """Append-only token file plus an item table kept in memory (a few ints per item)."""

    def __init__(self, directory: str, dtype: np.dtype):
        os.makedirs(directory)
        self.directory, self.dtype = directory, dtype
        self.tokens = open(os.path.join(directory, "tokens.bin"), "wb")
        self.offset, self.items = 0, []

    def add(self, sequences: list[list[int]], meta: tuple):
        self.items.append((self.offset, *(len(s) for s in sequences), *meta))
        for s in sequences:
            np.asarray(s, dtype=np.uint32).tofile(self.tokens)
            self.offset += len(s)

    def close(self) -> np.ndarray:
        self.tokens.close()
        items = np.array(self.items, dtype=self.dtype)
        np.save(os.path.join(self.directory, "items.npy"), items)
        return items


def _percentiles(values) -> dict:
    if len(values) == 0:
        return {}
    v = np.asarray(values)
    return {"p50": int(np.percentile(v, 50)), "p90": int(np.percentile(v, 90)),
            "p99": int(np.percentile(v, 99)), "max": int(v.max()), "mean": round(float(v.mean()), 1)}


def _batches(rows, files, size: int):
    index = {path: i for i, (path, _) in enumerate(files)}
    batch = []
    for raw in rows:
        batch.append(raw if raw.record is None else (index[raw.file], raw.row, raw.record))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def preprocess(inputs: list[str], output_dir: str, opts: Options, workers: int = 1, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Run the whole pipeline; returns the report (also written to ``report.json``)."""
    files = expand_inputs(inputs)
    templater = Templater(opts.tokenizer)  # fails early, in this process, on a bad tokenizer
    counts, dropped, sources = Counter(), Counter(), {}
    with atomic_directory(output_dir, overwrite=overwrite, keep=local_inputs(inputs) + (opts.tokenizer,)) as tmp:
        sft, pairs = _Store(os.path.join(tmp, "sft"), SFT_ITEM), _Store(os.path.join(tmp, "pairs"), PAIR_ITEM)
        bar = tqdm(total=count_rows(files), desc="preprocessing", unit="row", disable=not progress)

        def consume(results):
            for res in results:
                if isinstance(res, RawRow):  # unreadable line or file
                    if opts.strict:
                        raise StrictModeError(f"{res.file}: row {res.row}: {res.error}")
                    dropped[res.reason] += 1
                    counts["rows_read"] += res.row >= 0
                    continue
                counts["rows_read"] += 1
                bar.update()
                where = f"{files[res['file']][0]}: row {res['row']}"
                if "error" in res:
                    reason, message = res["error"]
                    if opts.strict:
                        raise StrictModeError(f"{where}: {message}")
                    dropped[reason] += 1
                    continue
                for reason in res["drop"]:
                    dropped[reason] += 1
                if "prompt" not in res:
                    continue
                src = sources.setdefault(res["source"], len(sources))
                if "sft_too_long" not in res["drop"]:
                    sft.add([res["prompt"], res.get("sft_response", res["chosen"])],
                            (src, res["file"], res["row"], res["chosen_gen"]))
                    counts["sft_truncated"] += "sft_response" in res
                counts["pairs_before_length_filter"] += res["pair_candidate"]
                if "rejected" in res:
                    pairs.add([res["prompt"], res["chosen"], res["rejected"]],
                              (src, res["file"], res["row"], res["chosen_gen"], res["rejected_gen"]))

        batches = _batches(read_rows(files), files, size=64)
        if workers <= 1:
            _init_worker(opts, templater)
            for batch in batches:
                consume([b for b in batch if isinstance(b, RawRow)])
                consume(_process([b for b in batch if not isinstance(b, RawRow)]))
        else:
            # a bounded window of batches in flight keeps memory flat whatever the corpus size
            with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (opts,)) as pool:
                window = deque()
                for batch in batches:
                    consume([b for b in batch if isinstance(b, RawRow)])
                    window.append(pool.apply_async(_process, ([b for b in batch if not isinstance(b, RawRow)],)))
                    if len(window) >= 4 * workers:
                        consume(window.popleft().get())
                while window:
                    consume(window.popleft().get())
        bar.close()
        sft_items, pair_items = sft.close(), pairs.close()
        if not len(sft_items) and not len(pair_items):  # nothing to train on: no output at all
            raise RawDataError(f"{', '.join(inputs)}: no SFT row and no pair out of {counts['rows_read']} rows read "
                               f"(dropped: {dict(sorted(dropped.items())) or 'none'})")
        report = {
            "rows_read": counts["rows_read"],
            "sft_rows": len(sft_items),
            "sft_truncated": counts["sft_truncated"],
            "pairs_before_length_filter": counts["pairs_before_length_filter"],
            "pairs": len(pair_items),
            "dropped": dict(sorted(dropped.items())),
            "lengths": {
                "sft_prompt": _percentiles(sft_items["prompt_len"]),
                "sft_response": _percentiles(sft_items["response_len"]),
                "pair_prompt": _percentiles(pair_items["prompt_len"]),
                "chosen": _percentiles(pair_items["chosen_len"]),
                "rejected": _percentiles(pair_items["rejected_len"]),
            },
        }
        meta = {"format": "megatron_redi.tokenized", "format_version": FORMAT_VERSION,
                "eos_token_id": templater.tok.eos_token_id, "end_of_turn": templater.end_of_turn,
                "inputs": [p for p, _ in files], "sources": list(sources), "options": asdict(opts)}
        for name, content in (("report.json", report), ("meta.json", meta)):
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(content, f, indent=2)
        for name in os.listdir(opts.tokenizer):  # the tokenizer travels with its data
            if name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
                os.makedirs(os.path.join(tmp, "tokenizer"), exist_ok=True)
                with open(os.path.join(opts.tokenizer, name), "rb") as src, \
                        open(os.path.join(tmp, "tokenizer", name), "wb") as dst:
                    dst.write(src.read())
    return report
