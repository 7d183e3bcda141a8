"""A recipe as a pipeline of stages with stamps.

Each stage runs its commands into its own directory under the run's output directory OUT and is
complete when its stamp, written last and atomically, says so:

    OUT/STAGE/stage.json    {"stage", "state": "running" | "complete", "identity": {...},
                             "outputs": {file: [size, digest]}}

The identity is what the stage's output is made from: the content of its config files (by name,
wherever the repository lies), a fingerprint of every input it reads from outside the run (names, sizes and modification times of
its files), the identities of the stages it follows, and the settings that decide its output.
Machine settings (how many GPUs, workers) are not part of it: a run resumed on another node is the
same run. The outputs are every file the stage's directory holds when it completes, each with its
size and a digest of its first and last MiB (atomic.content_digest). Started again, the pipeline

- checks, before running anything, that the selected stages done before, and those they read,
  still hold their outputs as they were made, and refuses, naming the files, where one was deleted
  or changed since (files added later, as DPO's reference log-probs beside the data, are not the
  stage's);
- skips a complete stage whose identity is unchanged;
- refuses a stage, complete or started, whose identity changed, naming what changed and the way
  out: a changed config is never silently reused, nor its stage silently redone;
- runs a started stage's commands again; each resumes by itself (the trainer from its newest
  checkpoint, tools/evaluate.py from the results it has written, the rest write their outputs
  whole or not at all).

The whole run holds OUT/.lock, so a second invocation while the first still runs stops at once.
SIGTERM or SIGINT reaching the pipeline is passed to the running command as SIGTERM (the trainer
then ends its step and writes a checkpoint) and the pipeline stops with exit 3; so does a command
that exits 3 itself, stopped by a signal that reached it first (under SLURM, every process of a job
step gets the scheduler's). The same command continues. Errors a user can fix raise RecipeError (exit 2).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from ..atomic import atomic_file, content_digest, fingerprint
from ..cli import STOPPED_EXIT, UserError

STAMP = "stage.json"


class RecipeError(UserError):
    """A mistake in the inputs or the invocation: exit 2, nothing started."""


class RecipeStopped(Exception):
    """A signal or a failed command stopped the pipeline inside a stage."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    # How a signal reaching the pipeline stops the command: by default a SIGTERM to it; a command on
    # every node of a SLURM job is stopped through SLURM instead (srun answers a SIGTERM by killing its step)
    stop: Callable[[], None] | None = None

    def __str__(self) -> str:
        argv = ["python" if a == sys.executable else a for a in self.argv]  # as a user would type it
        return " ".join([f"{k}={shlex.quote(v)}" for k, v in self.env.items()] + [shlex.quote(a) for a in argv])


@dataclass
class Stage:
    name: str  # also its directory under OUT
    what: str  # one line for the plan
    commands: Callable[[], list[Command]]  # built when the stage runs: a command may need an earlier stage's result
    inputs: tuple[str, ...] = ()  # files and directories it reads from outside the run: fingerprinted
    configs: tuple[str, ...] = ()  # files its hyperparameters come from: their content is part of the identity
    after: tuple[str, ...] = ()  # earlier stages whose outputs it reads
    settings: dict = field(default_factory=dict)  # anything else that decides its output
    plan: Callable[[], str] | None = None  # work and progress for the plan (steps, tokens, time left)
    result: Callable[[], str] | None = None  # what it made, once complete: printed and in the summary


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _by_content(identity: dict) -> dict:
    """An identity with its configs named by file name (stamps written before this keyed them by
    absolute path, which a copy of the repository elsewhere changes)."""
    configs = identity.get("configs")
    if isinstance(configs, dict):
        identity = {**identity, "configs": {os.path.basename(k): v for k, v in configs.items()}}
    return identity


def same_identity(recorded: dict, now: dict) -> bool:
    return _by_content(recorded) == now


class Pipeline:
    def __init__(self, out: str, stages: list[Stage]):
        self.out, self.stages = out, stages
        self.by_name = {s.name: s for s in stages}

    def directory(self, name: str) -> str:
        return os.path.join(self.out, name)

    def stamp(self, name: str) -> dict | None:
        path = os.path.join(self.directory(name), STAMP)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                stamp = json.load(f)
            if not (isinstance(stamp, dict) and stamp.get("state") in ("running", "complete")
                    and isinstance(stamp.get("identity"), dict)):
                raise ValueError("not a stage's record: an object with its state and identity")
        except (OSError, ValueError) as e:
            raise RecipeError(f"{path}: unreadable stage stamp ({e}); move {self.directory(name)} aside to redo "
                              "the stage") from None
        return stamp

    def complete(self, name: str) -> bool:
        return self.status(name) == "done"

    def identity(self, stage: Stage) -> dict:
        missing = [p for p in stage.inputs if not os.path.exists(p)]
        if missing:
            raise RecipeError(f"stage {stage.name}: input {', '.join(missing)} does not exist")
        return {"configs": {os.path.basename(c): _digest(c) for c in stage.configs},
                "inputs": [fingerprint(p) for p in stage.inputs],
                "after": {name: self.stamp(name)["identity"] for name in stage.after},
                "settings": stage.settings}

    def outputs(self, name: str) -> dict[str, list]:
        """Every file of the stage's directory but its stamp: [size, digest of its first and last MiB]."""
        root, found = self.directory(name), {}
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(f for f in files if not f.startswith(".") and f != STAMP):
                path = os.path.join(dirpath, file)
                found[os.path.relpath(path, root)] = [os.path.getsize(path), content_digest(path)]
        return found

    def check_outputs(self, name: str) -> None:
        """A complete stage still holds what it made; else a RecipeError naming what is gone or changed."""
        made = (self.stamp(name) or {}).get("outputs")
        if not isinstance(made, dict):  # stamps written before outputs were recorded: not checked
            return
        now = self.outputs(name)
        gone = [f for f in made if f not in now]
        changed = [f for f in made if f in now and now[f] != made[f]]
        if gone or changed:
            listed = [f"{f} deleted" for f in gone[:3]] + [f"{f} changed" for f in changed[:3]]
            more = len(gone) + len(changed) - len(listed)
            raise RecipeError(f"stage {name} was complete, but {self.directory(name)} no longer holds what it made "
                              f"({', '.join(listed)}{f' and {more} more' if more > 0 else ''}): move "
                              f"{self.directory(name)} aside to redo it (and with it every stage after it)")

    def check_plan(self, selected: list[str]) -> None:
        """Everything that can be found wrong before the first command runs: a stage following one
        neither complete nor run before it; a stage done before, or one a selected stage reads, that
        no longer holds its outputs; a stage with a stamp whose identity changed (where the stages it
        follows are complete, so that its identity is known now)."""
        if not selected:
            raise RecipeError("no stage selected: nothing to run")
        for i, name in enumerate(selected):
            for dep in self.by_name[name].after:
                if not self.complete(dep) and dep not in selected[:i]:
                    raise RecipeError(f"stage {name} needs stage {dep} complete first (add it to STAGES)")
        read = {dep for name in selected for dep in self.by_name[name].after}
        for stage in self.stages:
            if (stage.name in read or stage.name in selected) and self.complete(stage.name):
                self.check_outputs(stage.name)
        for name in selected:
            stage, stamp = self.by_name[name], self.stamp(name)
            if stamp is not None and all(self.complete(dep) for dep in stage.after):
                identity = self.identity(stage)
                if not same_identity(stamp["identity"], identity):
                    raise RecipeError(self._changed_message(stage, stamp, identity))

    def status(self, name: str) -> str:
        stamp = self.stamp(name)
        return "to run" if stamp is None else "done" if stamp.get("state") == "complete" else "started"

    # ---- running --------------------------------------------------------------------------------

    def run(self, selected: list[str], prepare: Callable[[], None] | None = None, log=None) -> None:
        """Run the ``selected`` stages in the pipeline's order; the others stay as they are.
        ``prepare``: run first, under the lock."""
        log = log or (lambda line: print(line, flush=True))  # before the commands' own output
        with self._lock():
            if prepare:
                prepare()
            log(self.plan_text(selected))
            self.check_plan(selected)
            started = time.time()
            for number, name in enumerate(selected, 1):
                self._run_stage(self.by_name[name], f"[{number}/{len(selected)}]", log)
            log(f"== done in {duration(time.time() - started)}")
            log(self.summary_text())

    def _run_stage(self, stage: Stage, counter: str, log) -> None:
        identity = self.identity(stage)
        stamp = self.stamp(stage.name)
        if stamp is not None and not same_identity(stamp["identity"], identity):
            raise RecipeError(self._changed_message(stage, stamp, identity))
        if stamp is not None and stamp.get("state") == "complete":
            log(f"== {counter} {stage.name}: done before, kept"
                + (f": {stage.result().splitlines()[0]}" if stage.result else ""))
            return
        how = "continuing" if stamp is not None else "starting"
        log(f"== {counter} {stage.name}: {how}: {stage.what}")
        self._write_stamp(stage.name, "running", identity)
        began = time.time()
        for command in stage.commands():
            log(f"   $ {command}")
            self._execute(stage, command)
        self._write_stamp(stage.name, "complete", identity, self.outputs(stage.name))
        log(f"== {counter} {stage.name}: done in {duration(time.time() - began)}"
            + (f": {stage.result().splitlines()[0]}" if stage.result else ""))

    def _write_stamp(self, name: str, state: str, identity: dict, outputs: dict | None = None) -> None:
        record = {"stage": name, "state": state, "identity": identity, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        if outputs is not None:
            record["outputs"] = outputs
        with atomic_file(os.path.join(self.directory(name), STAMP)) as f:
            json.dump(record, f, indent=2)

    def _changed_message(self, stage: Stage, stamp: dict, identity: dict) -> str:
        old = _by_content(stamp["identity"])
        changed = [key for key in ("configs", "inputs", "after", "settings") if old.get(key) != identity[key]]
        what = {"configs": "its config file", "inputs": "its input files", "after": "a stage it follows",
                "settings": "its settings"}
        state = "made" if stamp.get("state") == "complete" else "started"
        return (f"stage {stage.name} was {state} from other inputs or settings ({', '.join(what[c] for c in changed)} "
                f"changed since): refused rather than reused or redone. To keep it, restore what changed; to redo "
                f"it, move {self.directory(stage.name)} aside (and with it every stage after it), or choose "
                f"another OUT")

    def _execute(self, stage: Stage, command: Command) -> None:
        """Run one command, passing SIGTERM / SIGINT on to it as SIGTERM."""
        proc = subprocess.Popen(command.argv, env={**os.environ, **command.env})
        received = []

        def forward(signum, frame):
            received.append(signal.Signals(signum).name)
            if command.stop:
                command.stop()
            else:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if received or code == STOPPED_EXIT:  # a signal here, or one that reached the command first (SLURM's)
            why = received[0] if received else "a signal to its command"
            raise RecipeStopped(f"stopped ({why}) in stage {stage.name}: run the same command to continue",
                                STOPPED_EXIT)
        if code != 0:
            raise RecipeStopped(f"stage {stage.name} failed (exit {code}) in: {command}\n"
                                "the error is above; once fixed, the same command continues", 2 if code == 2 else 1)

    @contextlib.contextmanager
    def _lock(self):
        """Hold OUT/.lock for the pipeline's life (the kernel releases it however the process ends)."""
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, ".lock"), "a+") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.seek(0)
                owner = held.read().strip() or "?"
                raise RecipeError(f"{self.out}: another run of the recipe (process {owner}) is using it; wait for "
                                  "it to end, or choose another OUT") from None
            held.truncate(0)
            held.write(f"{os.getpid()}\n")
            held.flush()
            yield

    # ---- what the user sees ---------------------------------------------------------------------

    def plan_text(self, selected: list[str]) -> str:
        lines = [f"== the plan ({self.out})"]
        for stage in self.stages:
            status = self.status(stage.name) if stage.name in selected else "not selected"
            lines.append(f"   {stage.name:<12} {'done, kept' if status == 'done' else status:<13} {stage.what}")
            detail = stage.plan() if stage.plan and status in ("to run", "started") else ""
            if detail:
                lines.append(f"   {'':<26} {detail}")
        return "\n".join(lines)

    def summary_text(self) -> str:
        lines = ["== outputs"]
        for stage in self.stages:
            if self.complete(stage.name) and stage.result:
                lines.append(f"   {stage.name:<12} {stage.result()}")
        return "\n".join(lines)

    def dry_run_text(self, selected: list[str]) -> str:
        lines = [self.plan_text(selected), "== the commands, in order"]
        for name in selected:
            lines.append(f"# {name}")
            lines.extend(str(c) for c in self.by_name[name].commands())
        return "\n".join(lines)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def main_guard(body: Callable[[], None]) -> int:
    """Run ``body``; a stop (a signal, a failed stage) becomes its exit code with one line. Bad
    input (RecipeError) is left to ``cli.run``: exit 2."""
    try:
        body()
    except RecipeStopped as e:
        print(f"{e}", file=sys.stderr)
        return e.exit_code
    return 0
