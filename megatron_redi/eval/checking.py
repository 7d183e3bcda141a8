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

The workers are forked from a clean server process (multiprocessing's forkserver) that has the
checkers imported, so a replacement starts in milliseconds and nothing of the evaluating process
(its threads, its CUDA context) is inherited.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

from .answers import is_correct

TIME_LIMIT_S = 20.0  # per answer; math-verify's own parsing and verification time out at 5 s each
MEMORY_LIMIT = 4 * 2**30  # address space of a worker, bytes
WORKERS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    bounded: bool = False  # the time bound was hit (or the worker died): scored wrong


def _serve(conn, check, checker: str, memory_limit: int) -> None:
    """A worker: warms the checker up (its lazy imports are not any answer's time), says so, then
    answers (index, generation, reference) with (index, correct) until EOF."""
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    # math-verify logs the whole answer when its own 5 s timeouts fire (scored wrong, as LightEval scored them)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    check("<think></think> \\boxed{1}", "1", checker)
    conn.send("ready")
    while True:
        try:
            index, generation, reference = conn.recv()
        except EOFError:
            return
        conn.send((index, check(generation, reference, checker)))


class _Worker:
    def __init__(self, context, check, checker: str, memory_limit: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, check, checker, memory_limit), daemon=True)
        self.process.start()
        child.close()
        self.ready, self.index, self.deadline = False, None, 0.0

    def give(self, index: int, task: tuple, time_limit: float) -> None:
        self.index, self.deadline = index, time.monotonic() + time_limit
        self.conn.send((index, *task))

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["megatron_redi.eval.answers"])
    return context


def check_answers(tasks: list[tuple[str, object]], checker: str, workers: int = WORKERS,
                  time_limit: float | None = None, check=is_correct, memory_limit: int = MEMORY_LIMIT,
                  on_done=None) -> list[Verdict]:
    """The verdict of ``check(generation, reference, checker)`` for every (generation, reference) of
    ``tasks``, in order, each within ``time_limit`` seconds (``TIME_LIMIT_S`` by default). ``check``
    must be importable by name (it runs in the workers); ``on_done()`` is called as each answer is
    decided (a progress bar)."""
    time_limit = TIME_LIMIT_S if time_limit is None else time_limit
    if not tasks:
        return []
    verdicts: list[Verdict | None] = [None] * len(tasks)
    queue = list(range(len(tasks)))[::-1]
    context = _context()

    def start():
        return _Worker(context, check, checker, memory_limit)

    def decided(w: _Worker, verdict: Verdict):
        verdicts[w.index], w.index = verdict, None
        if on_done:
            on_done()

    pool = [start() for _ in range(max(1, min(workers, len(tasks))))]
    try:
        while queue or any(w.index is not None for w in pool):
            for w in pool:
                if w.ready and w.index is None and queue:
                    i = queue.pop()
                    w.give(i, tasks[i], time_limit)
            waiting = [w for w in pool if not w.ready or w.index is not None]
            deadlines = [w.deadline for w in waiting if w.index is not None]
            ready = wait([w.conn for w in waiting],
                         max(0.0, min(deadlines) - time.monotonic()) if deadlines else None)
            for k, w in enumerate(pool):
                if w.conn in ready:
                    try:
                        message = w.conn.recv()
                    except (EOFError, OSError):  # the worker died: on an answer, or warming up
                        message = None
                    if message == "ready":
                        w.ready = True
                    elif message is not None:
                        decided(w, Verdict(bool(message[1])))
                    else:
                        if w.index is not None:
                            decided(w, Verdict(False, bounded=True))
                        elif not w.ready:
                            raise RuntimeError(f"an answer-checking worker exited while starting ({checker})")
                        w.stop()
                        pool[k] = start()
                elif w.index is not None and time.monotonic() >= w.deadline:
                    decided(w, Verdict(False, bounded=True))
                    w.stop()
                    pool[k] = start()
    finally:
        for w in pool:
            w.stop()
    return verdicts
