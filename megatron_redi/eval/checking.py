"""Answer checking with a hard bound on each answer: a model's output is untrusted input.

One generation must not stall an evaluation of thousands: sympy evaluates an exponent tower or a
huge factorial eagerly (minutes, inside C code, where no alarm interrupts it), a regular expression
can backtrack for ever, LaTeX can nest ten thousand braces deep. Three layers keep every answer's
verdict bounded:

1. Shape limits before symbolic work, and regular expressions without nested quantifiers over the
   same characters (answers.py, rllm_grader.py).
2. Any exception a checker raises is a verdict: not correct, as the reference's reward scores an
   answer it cannot grade (``answers.is_correct``).
3. A hard time bound: ``check_answers`` runs the checks in worker processes; a worker still busy
   after ``TIME_LIMIT_S`` on one answer is killed and replaced, and that answer is scored wrong, as
   the reference scored an answer whose grading never ended, and counted as *bounded*. The workers
   also cap their memory (``MEMORY_LIMIT``), so a check that would take the machine's memory fails
   as an exception instead.

The workers are processes of their own, started afresh rather than forked, so nothing of the
evaluating process (its threads, its CUDA context, its main script) is inherited; each imports the
checkers once, and answers go to them in batches, each answer still under its own bound.
"""

from __future__ import annotations

import importlib
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from .answers import is_correct

TIME_LIMIT_S = 20.0  # per answer; math-verify's own parsing and verification time out at 5 s each
MEMORY_LIMIT = 4 * 2**30  # address space of a worker, bytes
WORKERS = min(4, os.cpu_count() or 1)
BATCH = 64  # answers per message to a worker, at most


@dataclass(frozen=True)
class Verdict:
    correct: bool
    bounded: bool = False  # the time bound was hit (or the worker died): scored wrong


def _serve(fd: int, check_name: str, checker: str, memory_limit: int) -> None:
    """A worker (its own ``python -c``, given FD CHECK CHECKER LIMIT): warms the checker
    up (its lazy imports are not any answer's time), says so, then takes batches of (index,
    generation, reference) and answers each with (index, correct) as soon as it is decided, until EOF."""
    module, _, name = check_name.partition(":")
    check = getattr(importlib.import_module(module), name)
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    # math-verify logs the whole answer when its own 5 s timeouts fire (scored wrong, as LightEval scored them)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    conn = Connection(fd)
    check("<think></think> \\boxed{1}", "1", checker)
    conn.send("ready")
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        for index, generation, reference in batch:
            conn.send((index, check(generation, reference, checker)))


class _Worker:
    """A worker process and the batch it was given: ``pending`` are its answers not yet decided, in
    order; ``deadline`` is the time limit after it last made progress (the batch given, an answer
    decided), so that it bounds the answer in hand. A process of its own, started afresh (not
    forked: nothing of the evaluating process, its threads or its CUDA context, is inherited), with
    the evaluating process's import path."""

    def __init__(self, check, checker: str, memory_limit: int):
        mine, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import sys; from {__name__} import _serve; _serve(int(sys.argv[1]), *sys.argv[2:4], "
             "int(sys.argv[4]))", str(theirs.fileno()), f"{check.__module__}:{check.__qualname__}", checker,
             str(memory_limit)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        theirs.close()
        self.conn = Connection(mine.detach())
        self.ready, self.pending, self.deadline = False, [], 0.0

    def give(self, indices: list[int], tasks: list, time_limit: float) -> None:
        self.pending, self.deadline = list(indices), time.monotonic() + time_limit
        self.conn.send([(i, *tasks[i]) for i in indices])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()


def check_answers(tasks: list[tuple[str, object]], checker: str, workers: int = WORKERS,
                  time_limit: float | None = None, check=is_correct, memory_limit: int = MEMORY_LIMIT,
                  on_done=None) -> list[Verdict]:
    """The verdict of ``check(generation, reference, checker)`` for every (generation, reference) of
    ``tasks``, in order, each within ``time_limit`` seconds (``TIME_LIMIT_S`` by default). ``check``
    must be importable by name (it runs in the workers); ``on_done()`` is called as each answer is
    decided (a progress bar). Answers go out in batches (one message for many: the checks are
    short), each answer still bounded on its own."""
    time_limit = TIME_LIMIT_S if time_limit is None else time_limit
    if not tasks:
        return []
    verdicts: list[Verdict | None] = [None] * len(tasks)
    queue = list(range(len(tasks)))[::-1]  # popped from the end: in order
    pool = [_Worker(check, checker, memory_limit) for _ in range(max(1, min(workers, len(tasks))))]

    def decide(i: int, verdict: Verdict):
        verdicts[i] = verdict
        if on_done:
            on_done()

    def replace(k: int):
        """The worker's answer in hand hit the bound (or killed it): wrong and bounded; the rest of
        its batch goes back to the queue, and a new worker takes its place."""
        w = pool[k]
        decide(w.pending[0], Verdict(False, bounded=True))
        queue.extend(reversed(w.pending[1:]))
        w.stop()
        pool[k] = _Worker(check, checker, memory_limit)

    try:
        while queue or any(w.pending for w in pool):
            for w in pool:
                if w.ready and not w.pending and queue:
                    size = max(1, min(BATCH, len(queue) // (2 * len(pool))))
                    w.give([queue.pop() for _ in range(min(size, len(queue)))], tasks, time_limit)
            waiting = [w for w in pool if not w.ready or w.pending]
            deadlines = [w.deadline for w in waiting if w.pending]
            ready = wait([w.conn for w in waiting],
                         max(0.0, min(deadlines) - time.monotonic()) if deadlines else None)
            for k, w in enumerate(pool):
                if w.conn in ready:
                    try:
                        while w.conn.poll():  # every answer it has sent so far
                            message = w.conn.recv()
                            if message == "ready":
                                w.ready = True
                                continue
                            i, correct = message
                            w.pending.remove(i)
                            decide(i, Verdict(bool(correct)))
                            w.deadline = time.monotonic() + time_limit
                    except (EOFError, OSError):  # the worker died: on an answer, or warming up
                        if not w.ready:
                            raise RuntimeError(f"an answer-checking worker exited while starting ({checker})") from None
                        replace(k)
                elif w.pending and time.monotonic() >= w.deadline:
                    replace(k)
    finally:
        for w in pool:
            w.stop()
    return verdicts
