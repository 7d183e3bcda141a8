"""Outputs that appear whole or not at all, and never at the cost of an input.

Every tool that writes a directory (converter, preprocessing, HF export, checkpoints) or a file
(evaluation results, reports) fills a temporary sibling, flushes it to disk, and renames it into
place only when it is complete, so an
interrupted run never leaves a directory that looks finished, and an existing one is replaced only
on request. An output that is, contains or lies inside a path the writer must keep (its input, a
run's checkpoints) is refused whatever ``overwrite`` says. Temporary siblings left by an
interrupted writer (named after its process id) are removed by the next writer of that output.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import shutil
import sys

from .cli import UserError


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class OutputExistsError(UserError):
    pass


def overlaps(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same directory, or one lies inside the other (links resolved)."""
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def check_output(output: str, overwrite: bool = False, keep: tuple[str, ...] = ()) -> None:
    """Refuse ``output`` before any work: it overlaps a path in ``keep``, or it is a non-empty
    directory (or a file) and ``overwrite`` is not set."""
    for path in keep:
        if path and overlaps(output, path):
            raise OutputExistsError(f"{output}: refused, it would overwrite {path} (the output may not be, "
                                    "contain or lie inside it)")
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)) and not overwrite:
        raise OutputExistsError(f"{output}: exists and is not empty (pass --overwrite to replace it)")


def fingerprint(path: str) -> list:
    """A cheap identity of an input, a file or a directory tree: every file's relative name, size
    and modification time (hidden entries, such as a download's cache, left out). Results computed
    from an input (a stage's outputs, an evaluation, DPO's reference log-probs) are reused only
    while it is unchanged: a checkpoint retrained in place, or thinned to its weights, is another."""
    path = os.path.realpath(path)
    if os.path.isfile(path):
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    files = []
    for dirpath, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            st = os.stat(os.path.join(dirpath, name))
            files.append([os.path.relpath(os.path.join(dirpath, name), path), st.st_size, st.st_mtime_ns])
    return [path, hashlib.sha256(json.dumps(files).encode()).hexdigest(), len(files)]


def content_digest(path: str, sample: int = 1 << 20) -> str:
    """What an input holds, cheaply, wherever it lies: every file's relative name and size and a
    digest of its first and last ``sample`` bytes (hidden entries left out). Unlike ``fingerprint``
    it ignores where the input is and when it was written (a copy, or a move to another node, is
    the same input); a model trained further, or another dataset of the same size, differs in the
    bytes sampled (a safetensors file ends with its last tensor; token files with their last
    items)."""
    digest = hashlib.sha256()
    root = os.path.realpath(path)
    files = [root] if os.path.isfile(root) else []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(dirpath, n) for n in sorted(names) if not n.startswith(".")]
    for file in files:
        size = os.path.getsize(file)
        digest.update(f"{os.path.relpath(file, root)}\0{size}\0".encode())
        with open(file, "rb") as f:
            digest.update(f.read(sample))
            if size > sample:
                f.seek(max(sample, size - sample))
                digest.update(f.read())
    return digest.hexdigest()


def sync_tree(path: str) -> None:
    """fsync every file and directory under ``path``, so that a rename publishing it can never
    expose a directory whose contents are still only in the page cache."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fsync(os.path.join(dirpath, name))
        fsync(dirpath)


def fsync(path: str) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: str, b: str) -> bool:
    """Swap two existing paths in one step (Linux's renameat2 with RENAME_EXCHANGE); False where
    the system or the filesystem (NFS, say) cannot."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), b)


def publish(tmp: str, output: str) -> None:
    """Flush ``tmp`` and rename it to ``output``, then flush the parent. An existing ``output`` is
    swapped with ``tmp`` in one step, so that no kill can find neither; where the filesystem cannot
    swap (NFS), two renames follow each other, and a kill in the instant between them leaves the
    old output as ``.NAME.tmp-PID.old``."""
    sync_tree(tmp)
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.exists(output) and _exchange(tmp, output):
        fsync(parent)
        shutil.rmtree(tmp, ignore_errors=True)  # the old output, now under the temporary name
        return
    old = None
    if os.path.exists(output):
        old = f"{tmp}.old"
        os.rename(output, old)
    os.rename(tmp, output)
    fsync(parent)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(output: str) -> None:
    """Remove ``.NAME.tmp-PID`` siblings of ``output`` whose writer no longer runs."""
    pattern = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.tmp-*")
    for tmp in glob.glob(pattern):
        pid = tmp.rsplit(".tmp-", 1)[1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # a file's (atomic_file's)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(output: str, overwrite: bool = False, keep: tuple[str, ...] = ()):
    """Yield a temporary sibling of ``output`` to fill; it becomes ``output`` only when the block
    ends without error, so an interrupted writer never leaves a directory that looks complete.
    ``keep``: paths the output may not overlap (``check_output``)."""
    output = os.path.abspath(output)
    check_output(output, overwrite, keep)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(output)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, output)


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w"):
    """Yield an open temporary sibling of ``path``; it is flushed and renamed to ``path`` when the
    block ends without error (replacing an existing file), and removed otherwise."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    remove_stale_temporaries(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync(os.path.dirname(path))
