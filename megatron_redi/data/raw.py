"""Read raw teacher traces, row by row, from local files: JSON lines, parquet, Arrow, or a
directory saved by ``datasets.Dataset.save_to_disk``; or, where a network exists, a Hub dataset named
``hub:OWNER/NAME[/CONFIG][:SPLIT]`` (streamed through ``datasets``). Rows stream in batches;
nothing holds a whole file (the real corpus has 516k rows with several long generations each)."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Iterator

from ..cli import UserError


class RawDataError(UserError):
    """An input that cannot be read at all (as opposed to a bad row, which is counted)."""


@dataclass
class RawRow:
    file: str
    row: int  # index of the row within its file (-1: the file itself failed)
    record: dict | None  # None when the row could not be read
    error: str | None = None  # why not, for a row that could not be read
    reason: str | None = None  # the report's name for that: invalid_json, invalid_utf8, unreadable_file


def _starts_a_json_array(path) -> bool:
    with open(path, "rb") as f:
        return f.read(4096).lstrip()[:1] == b"["


def _json_array(path) -> Iterator[RawRow]:
    """A file holding one JSON array of objects (rllm's test sets): read whole, so one bad byte
    costs the file, said in one row."""
    with open(path, "rb") as f:
        try:
            records = json.loads(f.read().decode("utf-8"))
        except UnicodeDecodeError as e:
            yield RawRow(path, -1, None, f"not UTF-8 (byte {e.start})", "invalid_utf8")
            return
        except json.JSONDecodeError as e:
            yield RawRow(path, -1, None, f"invalid JSON ({e.msg}, line {e.lineno})", "invalid_json")
            return
    for i, record in enumerate(records):
        if isinstance(record, dict):
            yield RawRow(path, i, record)
        else:
            yield RawRow(path, i, None, "an element of the JSON array that is not an object", "invalid_json")


def _jsonl(path) -> Iterator[RawRow]:
    if path.endswith(".json") and _starts_a_json_array(path):
        yield from _json_array(path)
        return
    with open(path, "rb") as f:  # decoded line by line: one bad byte costs its row, not the file's rest
        for i, raw in enumerate(f):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(path, i, None, f"not UTF-8 (byte {e.start} of the line)", "invalid_utf8")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield RawRow(path, i, None, f"invalid JSON ({e.msg})", "invalid_json")
                continue
            if not isinstance(record, dict):
                yield RawRow(path, i, None, "a JSON line that is not an object", "invalid_json")
                continue
            yield RawRow(path, i, record)


def _arrow_batches(path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=256)
        return
    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)  # datasets' .arrow files are IPC streams
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def _columnar(path, kind) -> Iterator[RawRow]:
    i = 0
    for batch in _arrow_batches(path, kind):
        for record in batch.to_pylist():
            yield RawRow(path, i, record)
            i += 1


def _saved_dataset_files(path: str) -> list[str]:
    """The arrow files of a directory written by datasets' ``save_to_disk``, from its state.json."""
    state = os.path.join(path, "state.json")
    if not os.path.exists(state):
        raise RawDataError(f"{path}: a directory, but not one saved by datasets (no state.json)")
    try:
        with open(state) as f:
            names = [d["filename"] for d in json.load(f)["_data_files"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise RawDataError(f"{state}: not a datasets state file (expected _data_files: a list of "
                           f"{{filename}}; {type(e).__name__}: {e})") from None
    if not all(isinstance(n, str) for n in names):
        raise RawDataError(f"{state}: _data_files names a file that is not a string")
    return names


def local_inputs(inputs: list[str]) -> tuple[str, ...]:
    """The local paths among ``inputs`` (globs expanded; Hub datasets left out): what an output
    may not overwrite."""
    return tuple(path for spec in inputs if not spec.startswith("hub:") for path in sorted(glob.glob(spec)) or [spec])


def expand_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """(path, kind) for every file named, globbed, or inside a saved datasets directory."""
    files = []
    for spec in inputs:
        if spec.startswith("hub:"):
            files.append((spec, "hub"))
            continue
        paths = sorted(glob.glob(spec)) or [spec]
        for path in paths:
            if not os.path.exists(path):
                raise RawDataError(f"{path}: no such file")
            if os.path.isdir(path):
                files += [(os.path.join(path, n), "arrow") for n in _saved_dataset_files(path)]
            elif path.endswith((".jsonl", ".json")):
                files.append((path, "jsonl"))
            elif path.endswith(".parquet"):
                files.append((path, "parquet"))
            elif path.endswith(".arrow"):
                files.append((path, "arrow"))
            else:
                raise RawDataError(f"{path}: unknown format (expected .jsonl, .parquet, .arrow or a saved dataset)")
    return files


def hub_spec(repo: str, config: str | None = None, split: str = "train") -> str:
    return f"hub:{repo}{'/' + config if config else ''}:{split}"


def _hub(spec) -> Iterator[RawRow]:
    import datasets  # imported here: it is slow to import, and only Hub inputs need it

    path, _, split = spec[len("hub:"):].partition(":")
    owner, name, *config = path.split("/", 2)
    try:
        rows = datasets.load_dataset(f"{owner}/{name}", *config, split=split or "train", streaming=True)
    except (OSError, ValueError) as e:  # no network (ConnectionError), no such dataset, config or split
        raise RawDataError(f"{spec}: cannot be read from the Hub ({str(e).splitlines()[0]}); without a network, "
                           "download it (huggingface-cli download REPO --repo-type dataset) and give its files") from None
    for i, record in enumerate(rows):
        yield RawRow(spec, i, record)


def count_rows(files: list[tuple[str, str]]) -> int | None:
    """Total rows when the formats record it (parquet); None otherwise (for the progress bar)."""
    if any(kind != "parquet" for _, kind in files):
        return None
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(p).metadata.num_rows for p, _ in files)
    except Exception:  # noqa: BLE001 - a corrupt file: read_rows reports it by name
        return None


def read_rows(files: list[tuple[str, str]]) -> Iterator[RawRow]:
    """Every row of every file; a file that cannot be read yields one row saying so, and reading
    goes on with the next file."""
    for path, kind in files:
        try:
            if kind == "hub":
                yield from _hub(path)
            else:
                yield from (_jsonl(path) if kind == "jsonl" else _columnar(path, kind))
        except Exception as e:  # noqa: BLE001 - pyarrow raises its own error types for corrupt files
            if not isinstance(e, (OSError, UnicodeDecodeError)) and not type(e).__module__.startswith("pyarrow"):
                raise
            yield RawRow(path, -1, None, f"unreadable file ({e})", "unreadable_file")
