"""The safetensors reader refuses every header that would let a read return the wrong bytes."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from megatron_redi.checkpoint.convert import main
from megatron_redi.checkpoint.safetensors_io import SafetensorsError, SafetensorsFile


def _file(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}




@pytest.mark.parametrize("entry,message", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, "negative or reversed"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "negative or reversed"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "8 bytes of data for shape \\[3\\] in F32 \\(12 expected\\)"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "overlap"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "overlap"),
    ({"dtype": "Q4", "shape": [1], "data_offsets": [12, 16]}, "unsupported dtype Q4"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [12, 16]}, "not a list of non-negative integers"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [12]}, "not a pair of integers"),
    ({"dtype": "F32", "shape": [1]}, "must be an object with dtype, shape and data_offsets"),
    ([1, 2, 3], "must be an object"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}, "truncated"),
])
def test_bad_entries_are_refused_naming_the_tensor(tmp_path, entry, message):
    path = _file(tmp_path / "x.safetensors", {**GOOD, "c": entry}, bytes(16))
    with pytest.raises(SafetensorsError, match=message):
        SafetensorsFile(path)


def test_valid_files_still_read(tmp_path):
    save_file({"w": torch.arange(6, dtype=torch.float32).view(2, 3), "e": torch.zeros(0)}, tmp_path / "ok.safetensors")
    f = SafetensorsFile(str(tmp_path / "ok.safetensors"))
    assert torch.equal(f.read("w", rows=slice(1, 2)), torch.tensor([[3.0, 4.0, 5.0]]))
    path = _file(tmp_path / "g.safetensors", GOOD, bytes(12))
    assert SafetensorsFile(path).read("b").shape == (1,)


def test_dry_run_no_longer_calls_a_forged_file_valid(tiny_checkpoint, tmp_path, capsys):
    import shutil

    src = tmp_path / "hf"
    shutil.copytree(tiny_checkpoint(), src)
    path = src / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin - 8, end - 8]  # into the previous tensor's (or the header's) bytes
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    assert main(["hf-to-native", "--input", str(src), "--output", str(tmp_path / "o"), "--tp", "1", "--dry-run"]) == 2
    assert name in capsys.readouterr().err


def test_a_closed_file_never_closes_a_descriptor_again(tmp_path):
    """close() then the finaliser: the second close would hit whichever file reused the number."""
    import gc

    for name in ("a", "b"):
        save_file({"x": torch.arange(4.0)}, tmp_path / f"{name}.safetensors")
    first = SafetensorsFile(str(tmp_path / "a.safetensors"))
    first.close()
    second = SafetensorsFile(str(tmp_path / "b.safetensors"))  # takes the number just freed
    del first
    gc.collect()
    assert torch.equal(second.read("x"), torch.arange(4.0))
    second.close()
