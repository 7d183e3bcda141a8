"""Outputs that appear whole or not at all.

Every tool that writes a directory (converter, preprocessing, checkpoints) fills a temporary
sibling and renames it into place only when it is complete, so an interrupted run never leaves
a directory that looks finished, and an existing one is replaced only on request.
"""

from __future__ import annotations

import contextlib
import os
import shutil


class OutputExistsError(ValueError):
    pass


@contextlib.contextmanager
def atomic_directory(output: str, overwrite: bool = False):
    """Yield a temporary sibling of ``output`` to fill; it becomes ``output`` only when the block
    ends without error, so an interrupted writer never leaves a directory that looks complete."""
    output = os.path.abspath(output)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)) and not overwrite:
        raise OutputExistsError(f"{output}: exists and is not empty (pass --overwrite to replace it)")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(output):
        old = f"{tmp}.old"
        os.rename(output, old)
    os.rename(tmp, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)
