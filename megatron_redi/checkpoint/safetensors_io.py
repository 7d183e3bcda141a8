"""Streaming reads and writes of safetensors files, one tensor (or row range) at a time.

The file format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and ``data_offsets`` [begin, end) into the data block, then the data block.
Reading with ``os.pread`` (not mmap) keeps the resident memory of a conversion near the size of
the tensor in hand; writing the header first, from shapes known in advance, lets tensors be
appended one by one without ever holding a whole checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import struct

import torch

from ..cli import UserError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(UserError):
    pass


def _validate_entries(path: str, header: dict, data_size: int) -> None:
    """Every entry an object with a known dtype, a shape of non-negative integers and data offsets
    0 <= begin <= end inside the data block, end - begin = numel x itemsize, no two overlapping: so
    that no read can return header bytes, another tensor's bytes, or a short tensor."""
    spans = []
    for name, e in header.items():
        where = f"{path}: tensor {name}"
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise SafetensorsError(f"{where}: the entry must be an object with dtype, shape and data_offsets")
        if e["dtype"] not in DTYPES:
            raise SafetensorsError(f"{where} has unsupported dtype {e['dtype']}")
        shape, offsets = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise SafetensorsError(f"{where}: data_offsets {offsets!r} is not a pair of integers")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}) are negative or reversed")
        if end > data_size:
            raise SafetensorsError(f"{path}: truncated (tensor {name} ends past the end of the file)")
        expected = math.prod(shape) * torch.empty((), dtype=DTYPES[e["dtype"]]).element_size()
        if end - begin != expected:
            raise SafetensorsError(f"{where}: {end - begin} bytes of data for shape {shape} in {e['dtype']} "
                                   f"({expected} expected)")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise SafetensorsError(f"{path}: tensors {a} and {b} overlap in the data block")


class SafetensorsFile:
    """Random access to the tensors of one safetensors file, without mapping it."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise SafetensorsError(f"{path}: cannot open ({e.strerror})") from None
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 8, 0)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: truncated (no header)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise SafetensorsError(f"{path}: truncated (header of {n} bytes, file of {size})")
        try:
            header = json.loads(os.pread(self._fd, n, 8))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: unreadable header ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: the header is not a JSON object")
        self.metadata = header.pop("__metadata__", {}) or {}
        self._data_start = 8 + n
        self._entries = header
        _validate_entries(path, header, size - self._data_start)

    def close(self):
        """Once: the descriptor's number may belong to another file afterwards, which a second
        close (the finaliser's) would close under it."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES[self._entries[name]["dtype"]]

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        """The tensor, or rows [start, stop) of it (read alone), then optionally columns."""
        e = self._entries[name]
        shape, dtype = list(e["shape"]), DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        if rows is not None and shape:
            start, stop, _ = rows.indices(shape[0])
            row_bytes = (end - begin) // max(shape[0], 1)
            begin, end = begin + start * row_bytes, begin + stop * row_bytes
            shape[0] = stop - start
        buf = bytearray(end - begin)
        view, offset = memoryview(buf), self._data_start + begin
        while view:  # pread may return fewer bytes than asked
            got = os.preadv(self._fd, [view], offset)
            if got <= 0:
                raise SafetensorsError(f"{self.path}: short read of tensor {name}")
            view, offset = view[got:], offset + got
        tensor = (torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)).view(shape)
        return tensor[:, cols].contiguous() if cols is not None else tensor


class StreamingWriter:
    """Write a safetensors file whose tensors are known by name, dtype and shape in advance,
    appending their data in that order. Nothing is complete until ``close()`` checks that every
    tensor arrived; callers write into a temporary directory and rename it when all files close."""

    def __init__(self, path: str, specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path, self._specs, self._next = path, specs, 0
        header, offset = {}, 0
        for name, dtype, shape in specs:
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        header["__metadata__"] = metadata or {"format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # align the data block to 8 bytes
        self.nbytes = offset
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(blob)) + blob)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._specs):
            raise SafetensorsError(f"{self.path}: unexpected tensor {name}")
        want, dtype, shape = self._specs[self._next]
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise SafetensorsError(f"{self.path}: expected {want} {dtype} {list(shape)}, got {name} "
                                   f"{tensor.dtype} {list(tensor.shape)}")
        data = tensor.detach().contiguous().cpu()
        if data.numel():
            self._file.write(data.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
        self._next += 1

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._specs):
            raise SafetensorsError(f"{self.path}: {len(self._specs) - self._next} tensor(s) never written")
