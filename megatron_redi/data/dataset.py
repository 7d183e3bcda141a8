"""Memory-mapped access to the tokenised datasets that ``preprocess`` writes.

    sft[i]    -> Sequence(tokens = prompt + response, prompt_len)
    pairs[i]  -> (Sequence(prompt + chosen), Sequence(prompt + rejected))

Token ids live in one flat ``tokens.bin`` per dataset; ``items.npy`` holds offsets, lengths and
provenance. ``pairs/ref_logps.npz``, when present, was written by the trainer's DPO pre-pass: the
reference log-prob sums of chosen and rejected ([P, 2] float32) and the reference they are of,
in one file, so that the values can never be another reference's.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_file, content_digest
from ..cli import UserError
from .preprocess import FORMAT_VERSION


class DatasetError(UserError):
    pass


@dataclass(frozen=True)
class Sequence:
    tokens: np.ndarray  # [prompt_len + response_len] token ids
    prompt_len: int

    @property
    def response_len(self) -> int:
        return len(self.tokens) - self.prompt_len


class _Part:
    def __init__(self, directory: str):
        self.directory = directory
        try:
            self.items = np.load(os.path.join(directory, "items.npy"), mmap_mode="r")
            path = os.path.join(directory, "tokens.bin")
            self.tokens = np.memmap(path, dtype=np.uint32, mode="r") if os.path.getsize(path) else np.zeros(0, np.uint32)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{directory}: cannot read the tokenised data ({e})") from None

    def __len__(self):
        return len(self.items)

    def identity(self) -> str:
        """What the items and their tokens are (atomic.content_digest of both files; not what the
        trainer adds beside them, DPO's reference log-probs)."""
        return "+".join(content_digest(os.path.join(self.directory, f)) for f in ("items.npy", "tokens.bin"))

    def _slice(self, start, length):
        return np.asarray(self.tokens[start:start + length], dtype=np.int64)

    def check(self, vocab_size: int, chunk: int = 1 << 26) -> None:
        """Every item inside tokens.bin and every token id below ``vocab_size``; else a
        DatasetError naming the file and the item (read in chunks: memory stays flat)."""
        path = os.path.join(self.directory, "tokens.bin")
        offsets = self.items["offset"].astype(np.int64)
        ends = offsets + self.item_tokens()
        bad = np.flatnonzero((offsets < 0) | (ends > len(self.tokens)))
        if len(bad):
            raise DatasetError(f"{path}: item {bad[0]} ends at token {ends[bad[0]]}, past the file's "
                               f"{len(self.tokens)} tokens (truncated, or not the file items.npy describes)")
        for start in range(0, len(self.tokens), chunk):
            part = self.tokens[start:start + chunk]
            outside = np.flatnonzero(part >= vocab_size)
            if len(outside):
                at = start + int(outside[0])
                item = int(np.searchsorted(offsets, at, side="right")) - 1
                raise DatasetError(f"{path}: item {item} holds token id {int(part[outside[0]])}, outside the "
                                   f"model's vocabulary of {vocab_size} (data tokenised for another model?)")


class SFTData(_Part):
    def __getitem__(self, i) -> Sequence:
        it = self.items[i]
        n = int(it["prompt_len"]) + int(it["response_len"])
        return Sequence(self._slice(int(it["offset"]), n), int(it["prompt_len"]))

    def total_lengths(self) -> np.ndarray:
        return self.items["prompt_len"].astype(np.int64) + self.items["response_len"]

    item_tokens = total_lengths  # tokens an item holds in tokens.bin

    def response_lengths(self) -> np.ndarray:
        return self.items["response_len"].astype(np.int64)


class PairData(_Part):
    REF_LOGPS = "ref_logps.npz"

    def __init__(self, directory):
        super().__init__(directory)
        self.ref_logps, self._reference = None, None
        path = os.path.join(directory, self.REF_LOGPS)
        if os.path.exists(path):
            try:
                with np.load(path) as stored:
                    values, reference = stored["values"], str(stored["reference"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                return  # unreadable (a file cut short): computed again
            if values.shape == (len(self), 2):
                self.ref_logps, self._reference = values, reference

    def stored_reference(self) -> str | None:
        """The reference checkpoint whose log-probs ``ref_logps`` holds, if any."""
        return self._reference

    def store_reference_logps(self, values: np.ndarray, reference: str) -> None:
        """Write ``[P, 2]`` reference log-prob sums with their reference, in one file that appears
        whole (a rename)."""
        values = values.astype(np.float32)
        with atomic_file(os.path.join(self.directory, self.REF_LOGPS), "wb") as f:
            np.savez(f, values=values, reference=np.array(reference))
        self.ref_logps, self._reference = values, reference

    def __getitem__(self, i) -> tuple[Sequence, Sequence]:
        it = self.items[i]
        p, c, r, off = int(it["prompt_len"]), int(it["chosen_len"]), int(it["rejected_len"]), int(it["offset"])
        prompt = self._slice(off, p)
        chosen, rejected = self._slice(off + p, c), self._slice(off + p + c, r)
        return Sequence(np.concatenate([prompt, chosen]), p), Sequence(np.concatenate([prompt, rejected]), p)

    def total_lengths(self) -> np.ndarray:
        """Tokens of both sequences of each pair (the prompt counted twice, as it is computed twice)."""
        it = self.items
        return 2 * it["prompt_len"].astype(np.int64) + it["chosen_len"] + it["rejected_len"]

    def item_tokens(self) -> np.ndarray:
        """Tokens an item holds in tokens.bin: the prompt once, then chosen and rejected."""
        it = self.items
        return it["prompt_len"].astype(np.int64) + it["chosen_len"] + it["rejected_len"]


class TokenizedData:
    """A directory written by ``tools/preprocess_data.py``."""

    def __init__(self, directory: str):
        meta_file = os.path.join(directory, "meta.json")
        try:
            with open(meta_file) as f:
                self.meta = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"{directory}: not a tokenised dataset (no meta.json; run tools/preprocess_data.py)") from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{meta_file}: format_version {self.meta.get('format_version')!r} is not {FORMAT_VERSION}")
        self.directory = directory
        self.sft = SFTData(os.path.join(directory, "sft"))
        self.pairs = PairData(os.path.join(directory, "pairs"))
        self.tokenizer_dir = os.path.join(directory, "tokenizer")

    def check(self, vocab_size: int) -> None:
        """Both parts lie inside their token files and hold only ids the model knows."""
        self.sft.check(vocab_size)
        self.pairs.check(vocab_size)
