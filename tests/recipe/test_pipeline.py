"""Stages with stamps: a complete stage is skipped, a changed one refused, a started one resumed,
the run locked, a signal passed on to the running command."""

import fcntl
import json
import os
import signal
import sys
import threading
import time

import pytest

from megatron_redi.recipe.pipeline import Command, Pipeline, RecipeError, RecipeStopped, Stage


def _counting(tmp_path, name, code=0):
    """A command that appends a line to NAME.count and exits with ``code``."""
    script = f"open({str(tmp_path / (name + '.count'))!r}, 'a').write('x\\n'); raise SystemExit({code})"
    return Command([sys.executable, "-c", script])


def _runs(tmp_path, name):
    path = tmp_path / f"{name}.count"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _pipeline(tmp_path, config_text="lr: 1\n", code=0):
    config = tmp_path / "config.yaml"
    if not config.exists() or config.read_text() != config_text:
        config.write_text(config_text)
    upstream = Stage("a", "first", lambda: [_counting(tmp_path, "a")], configs=(str(config),))
    downstream = Stage("b", "second", lambda: [_counting(tmp_path, "b", code)], after=("a",), settings={"k": 16})
    return Pipeline(str(tmp_path / "out"), [upstream, downstream])


def _stamp(tmp_path, name):
    return json.loads((tmp_path / "out" / name / "stage.json").read_text())


def test_a_complete_stage_is_skipped(tmp_path):
    log = []
    _pipeline(tmp_path).run(["a", "b"], log=log.append)
    _pipeline(tmp_path).run(["a", "b"], log=log.append)
    assert (_runs(tmp_path, "a"), _runs(tmp_path, "b")) == (1, 1)
    assert _stamp(tmp_path, "b")["state"] == "complete"
    assert any("a: done before, kept" in line for line in log)


def test_a_stage_whose_outputs_were_deleted_or_changed_since_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"

    def pipeline():
        write = f"import os; os.makedirs({str(out / 'a' / 'sub')!r}, exist_ok=True); " \
                f"open({str(out / 'a' / 'sub' / 'made.txt')!r}, 'w').write('made'); " \
                f"open({str(out / 'a' / 'kept.txt')!r}, 'w').write('kept')"
        return Pipeline(str(out), [Stage("a", "makes two files", lambda: [Command([sys.executable, "-c", write])]),
                                   Stage("b", "second", lambda: [_counting(tmp_path, "b")], after=("a",))])

    pipeline().run(["a", "b"], log=lambda line: None)
    assert set(_stamp(tmp_path, "a")["outputs"]) == {os.path.join("sub", "made.txt"), "kept.txt"}
    (out / "a" / "added_later.txt").write_text("a later stage's file beside the outputs")
    log = []
    pipeline().run(["a", "b"], log=log.append)
    assert any("a: done before, kept" in line for line in log) and _runs(tmp_path, "b") == 1
    (out / "a" / "sub" / "made.txt").write_text("damaged")
    with pytest.raises(RecipeError, match=r"stage a was complete, but .*out/a no longer holds what it made "
                                          r"\(sub/made.txt changed\): move .*out/a aside to redo it"):
        pipeline().run(["b"], log=lambda line: None)  # b alone asked for: it reads a
    os.remove(out / "a" / "kept.txt")
    with pytest.raises(RecipeError, match=r"\(kept.txt deleted, sub/made.txt changed\)"):
        pipeline().run(["a", "b"], log=lambda line: None)
    assert _runs(tmp_path, "b") == 1  # refused before any command ran


def test_a_changed_config_is_refused_with_the_way_out(tmp_path):
    _pipeline(tmp_path).run(["a", "b"], log=lambda line: None)
    with pytest.raises(RecipeError, match=r"stage a was made from other inputs.*its config file.*move .*out/a aside"):
        _pipeline(tmp_path, "lr: 2\n").run(["a", "b"], log=lambda line: None)
    assert (_runs(tmp_path, "a"), _runs(tmp_path, "b")) == (1, 1)  # nothing reused, nothing redone


def test_a_redone_stage_makes_the_ones_after_it_stale(tmp_path):
    _pipeline(tmp_path).run(["a", "b"], log=lambda line: None)
    os.rename(tmp_path / "out" / "a", tmp_path / "a.old")  # the way out the message gives
    with pytest.raises(RecipeError, match="stage b was made .*a stage it follows"):
        _pipeline(tmp_path, "lr: 2\n").run(["a", "b"], log=lambda line: None)
    assert _runs(tmp_path, "a") == 2 and _stamp(tmp_path, "a")["state"] == "complete"


def test_a_failed_stage_stays_started_and_resumes(tmp_path):
    with pytest.raises(RecipeStopped) as failed:
        _pipeline(tmp_path, code=2).run(["a", "b"], log=lambda line: None)
    assert failed.value.exit_code == 2 and _stamp(tmp_path, "b")["state"] == "running"
    log = []
    _pipeline(tmp_path).run(["a", "b"], log=log.append)
    assert (_runs(tmp_path, "a"), _runs(tmp_path, "b")) == (1, 2)
    assert any("b: continuing" in line for line in log) and _stamp(tmp_path, "b")["state"] == "complete"


def test_a_started_stage_whose_settings_changed_is_refused(tmp_path):
    with pytest.raises(RecipeStopped):
        _pipeline(tmp_path, code=1).run(["a", "b"], log=lambda line: None)
    p = _pipeline(tmp_path)
    p.by_name["b"].settings = {"k": 4}
    with pytest.raises(RecipeError, match="stage b was started from other inputs.*its settings"):
        p.run(["a", "b"], log=lambda line: None)


def test_a_stage_needs_the_stages_it_follows(tmp_path):
    with pytest.raises(RecipeError, match="stage b needs stage a complete first"):
        _pipeline(tmp_path).run(["b"], log=lambda line: None)
    assert _runs(tmp_path, "b") == 0


def test_inputs_are_fingerprinted(tmp_path):
    data = tmp_path / "raw.jsonl"
    data.write_text("{}\n")
    stage = Stage("a", "reads raw", lambda: [_counting(tmp_path, "a")], inputs=(str(data),))
    Pipeline(str(tmp_path / "out"), [stage]).run(["a"], log=lambda line: None)
    data.write_text("{}\n{}\n")
    with pytest.raises(RecipeError, match="its input files"):
        Pipeline(str(tmp_path / "out"), [stage]).run(["a"], log=lambda line: None)


def test_a_second_run_stops_at_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # another process's pipeline, as far as flock can tell
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(RecipeError, match=r"another run of the recipe \(process 4242\)"):
            _pipeline(tmp_path).run(["a", "b"], log=lambda line: None)
    assert _runs(tmp_path, "a") == 0


def test_a_signal_is_passed_on_and_the_stage_stays_started(tmp_path):
    started, got = tmp_path / "started", tmp_path / "got"
    script = (f"import signal, sys, time\n"
              f"signal.signal(signal.SIGTERM, lambda *a: (open({str(got)!r}, 'w').write('TERM'), sys.exit(3)))\n"
              f"open({str(started)!r}, 'w').close()\n"
              f"time.sleep(60)\n")
    stage = Stage("long", "waits", lambda: [Command([sys.executable, "-c", script])])

    def preempt():
        while not started.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=preempt, daemon=True).start()
    with pytest.raises(RecipeStopped, match="stopped \\(SIGTERM\\) in stage long: run the same command") as stopped:
        Pipeline(str(tmp_path / "out"), [stage]).run(["long"], log=lambda line: None)
    assert stopped.value.exit_code == 3 and got.read_text() == "TERM"
    assert _stamp(tmp_path, "long")["state"] == "running"
    assert signal.getsignal(signal.SIGTERM) == before  # the pipeline's handler is gone



def test_a_command_with_its_own_stop_is_stopped_that_way(tmp_path, monkeypatch):
    """A command on every node of a SLURM job is stopped through SLURM (Command.stop: scancel), never
    by a SIGTERM to srun, which would kill its step at once."""
    import subprocess

    started, asked = tmp_path / "started", tmp_path / "asked"
    script = f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(60)\n"
    children = []
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: children.append(popen(*a, **k)) or children[-1])

    def stop():  # as scancel would: the command's processes end, stopped (exit 3)
        asked.write_text("asked")
        children[0].kill()

    stage = Stage("long", "waits", lambda: [Command([sys.executable, "-c", script], stop=stop)])

    def preempt():
        while not started.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    with pytest.raises(RecipeStopped, match="stopped \\(SIGTERM\\) in stage long") as stopped:
        Pipeline(str(tmp_path / "out"), [stage]).run(["long"], log=lambda line: None)
    assert stopped.value.exit_code == 3 and asked.read_text() == "asked"
    assert children[0].returncode == -signal.SIGKILL  # stopped by its own stop, not sent a SIGTERM


def test_a_command_that_exits_3_was_stopped(tmp_path):
    """A signal that reached the command first (SLURM signals every process of a job step): exit 3."""
    stage = Stage("node", "a node stopped", lambda: [Command([sys.executable, "-c", "raise SystemExit(3)"])])
    with pytest.raises(RecipeStopped, match="stopped \\(a signal to its command\\) in stage node") as stopped:
        Pipeline(str(tmp_path / "out"), [stage]).run(["node"], log=lambda line: None)
    assert stopped.value.exit_code == 3 and _stamp(tmp_path, "node")["state"] == "running"


def test_the_whole_plan_is_checked_before_the_first_command(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("lr: 1\n")
    stages = [Stage("a", "first", lambda: [_counting(tmp_path, "a")]),
              Stage("b", "second", lambda: [_counting(tmp_path, "b")], after=("a",)),
              Stage("c", "third", lambda: [_counting(tmp_path, "c")], after=("b",), configs=(str(config),))]
    with pytest.raises(RecipeError, match=r"stage c needs stage b complete first \(add it to STAGES\)"):
        Pipeline(str(tmp_path / "out"), stages).run(["a", "c"], log=lambda line: None)
    assert _runs(tmp_path, "a") == 0  # a was not run for nothing
    with pytest.raises(RecipeError, match="no stage selected"):
        Pipeline(str(tmp_path / "out"), stages).run([], log=lambda line: None)
    Pipeline(str(tmp_path / "out"), stages).run(["a", "b", "c"], log=lambda line: None)
    config.write_text("lr: 2\n")  # c's config changed: refused before a and b are looked at again
    with pytest.raises(RecipeError, match="stage c was made from other inputs"):
        Pipeline(str(tmp_path / "out"), stages).run(["a", "b", "c"], log=lambda line: None)


@pytest.mark.parametrize("content", ["[1, 2]", '{"state": "complete"}', '{"state": "done", "identity": {}}', '"x"'])
def test_a_stamp_of_the_wrong_shape_is_named(tmp_path, content):
    _pipeline(tmp_path).run(["a", "b"], log=lambda line: None)
    (tmp_path / "out" / "a" / "stage.json").write_text(content)
    with pytest.raises(RecipeError, match=r"out/a/stage.json: unreadable stage stamp .*move .*out/a aside"):
        _pipeline(tmp_path).run(["a", "b"], log=lambda line: None)


def test_configs_are_identified_by_content_not_by_where_the_repository_lies(tmp_path):
    """The same run from another copy of the repository (its configs elsewhere, byte for byte the
    same): kept; a stamp written with configs keyed by absolute path (before this) is kept too."""
    first, second = tmp_path / "repo1", tmp_path / "repo2"
    for repo in (first, second):
        repo.mkdir()
        (repo / "redi.yaml").write_text("lr: 1\n")

    def pipeline(repo):
        return Pipeline(str(tmp_path / "out"), [Stage("a", "first", lambda: [_counting(tmp_path, "a")],
                                                      configs=(str(repo / "redi.yaml"),))])

    pipeline(first).run(["a"], log=lambda line: None)
    log = []
    pipeline(second).run(["a"], log=log.append)
    assert _runs(tmp_path, "a") == 1 and any("a: done before, kept" in line for line in log)
    stamp = _stamp(tmp_path, "a")
    stamp["identity"]["configs"] = {str(first / "redi.yaml"): stamp["identity"]["configs"]["redi.yaml"]}
    (tmp_path / "out" / "a" / "stage.json").write_text(json.dumps(stamp))
    pipeline(second).run(["a"], log=lambda line: None)
    assert _runs(tmp_path, "a") == 1
