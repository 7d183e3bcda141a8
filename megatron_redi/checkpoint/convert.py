"""Command line of tools/convert_checkpoint.py: HF <-> native, and native resharding.

    hf-to-native      --input HF_DIR --output DIR --tp N [--dtype bf16|fp16|fp32]
    native-to-hf      --input DIR --output HF_DIR [--dtype bf16|fp16|fp32] [--max-shard-size 5GB]
    native-to-native  --input DIR --output DIR2 --tp M [--dtype ...]

Common: --overwrite (replace a non-empty output; an output that is, contains or lies inside the
input is always refused), --dry-run (validate only, write nothing),
--no-progress. Bad input exits with code 2 and one line naming the file, tensor or field.
"""

from __future__ import annotations

import argparse
import resource
import sys

from ..atomic import atomic_directory, check_output
from ..cli import HelpFormatter, command
from ..settings import DTYPES, local_directory
from ..parallel.layout import TPLayout
from .hf_mapping import CheckpointError
from .native import (
    NativeCheckpointReader,
    copy_side_files,
    is_native,
    open_checkpoint,
    parse_size,
    write_hf,
    write_native,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convert_checkpoint.py", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, needs_tp in (("hf-to-native", True), ("native-to-hf", False), ("native-to-native", True)):
        s = sub.add_parser(name, formatter_class=HelpFormatter)
        s.add_argument("--input", required=True)
        s.add_argument("--output", required=True)
        if needs_tp:
            s.add_argument("--tp", type=int, required=True, help="tensor-parallel size of the output")
        s.add_argument("--dtype", choices=sorted(DTYPES),
                       help="output dtype (default: the input's)")
        if name == "native-to-hf":
            s.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
        s.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
        s.add_argument("--dry-run", action="store_true", help="validate the input and arguments only")
        s.add_argument("--no-progress", action="store_true")
    return p


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def convert(args) -> str:
    local_directory(args.input, "the input checkpoint")
    want_native_input = args.command != "hf-to-native"
    if want_native_input != is_native(args.input):
        kind = "a native" if want_native_input else "a Hugging Face"
        raise CheckpointError(f"{args.input}: {args.command} needs {kind} checkpoint as input")
    reader, cfg = open_checkpoint(args.input)
    if isinstance(reader, NativeCheckpointReader):
        in_dtype = reader.dtype
    else:
        in_dtype = reader.dtype("model.embed_tokens.weight")
    dtype = DTYPES[args.dtype] if args.dtype else in_dtype
    if args.command != "native-to-hf":
        TPLayout(cfg, args.tp)  # refuses a TP size the model cannot be split over
        max_shard = None
    else:
        max_shard = parse_size(args.max_shard_size)
    check_output(args.output, args.overwrite, keep=(args.input,))
    if args.dry_run:
        return f"dry run: {args.input} is valid ({cfg.architecture}, {cfg.num_parameters():,} parameters)"
    with atomic_directory(args.output, overwrite=args.overwrite, keep=(args.input,)) as tmp:
        copy_side_files(args.input, tmp)
        if args.command == "native-to-hf":
            stats = write_hf(reader, cfg, tmp, dtype, max_shard, progress=not args.no_progress)
        else:
            stats = write_native(reader, cfg, tmp, args.tp, dtype, progress=not args.no_progress)
    return f"{args.command}: {stats.summary()}, peak RSS {_peak_rss_gib():.2f} GiB -> {args.output}"


@command
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(convert(args))
    except OSError as e:  # a full disk, a permission: the output was not written, the input is intact
        print(f"error: {e.filename or args.output}: {e.strerror or e}; nothing was written to {args.output}",
              file=sys.stderr)
        return 2
    return 0
