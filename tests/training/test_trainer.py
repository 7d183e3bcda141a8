"""The trainer end to end on CPU: every loss, parallel equivalence, resume, bad steps, export."""

import json
import os
import shutil

import pytest
import torch
from multirank import run_ranks

from megatron_redi.training import TrainConfigError, Trainer, TrainingStopped, load_config


def config(data, model, out, *overrides, stage="pairwise", loss="redi"):
    base = ["--model.path", model, "--model.dtype", "fp32", "--data.path", data, "--train.stage", stage,
            "--loss.type", loss, "--data.global_batch", "8", "--data.micro_batch_tokens", "512",
            "--optim.lr", "1e-3", "--train.max_steps", "4", "--train.output_dir", str(out),
            "--train.progress", "false", "--train.tensorboard", "false"]
    return load_config(None, base + [str(o) for o in overrides])


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_resumed_run_equals_full_run(tmp_path, keys):
    """``tmp_path/cut`` (stopped after step 3, resumed to 6) logged what ``tmp_path/full`` did, bit for bit."""
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(full, cut):
        for key in keys:
            assert x[key] == y[key], (x["step"], key)


@pytest.mark.parametrize("stage,loss,extra", [
    ("sft", "sft", []), ("pairwise", "redi", []), ("pairwise", "symmetric", []),
    ("pairwise", "simpo", ["--loss.beta", "2.0"]), ("pairwise", "dpo", ["--reference.mode", "model"]),
])
def test_each_loss_trains_a_few_steps(tiny_run_inputs, tmp_path, stage, loss, extra):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path, *extra, stage=stage, loss=loss)).run()
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert all(v == v for v in r.values() if isinstance(v, float))  # no NaN
        assert r["grad_norm"] > 0 and "update_norm" in r and r["tokens"] > 0
    assert rows[0]["lr"] == 0.0 and rows[1]["lr"] > 0  # HF's warmup: the first step at lr 0
    if stage == "pairwise":
        assert {"logps/chosen_mean", "logps/rejected_mean", "rewards/margin", "rewards/accuracy"} <= rows[0].keys()
    if loss == "dpo":  # the reference is the starting model: the first step has no margin yet
        assert abs(rows[0]["rewards/margin"]) < 1e-5 and rows[0]["loss"] == pytest.approx(0.6931, abs=1e-4)


def test_dpo_prepass_stores_reference_logps(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    Trainer(config(str(copy), model, tmp_path / "run", "--reference.mode", "prepass", loss="dpo")).run()
    assert (copy / "pairs" / "ref_logps.npz").exists()
    a = metrics(tmp_path / "run")
    Trainer(config(str(copy), model, tmp_path / "run2", "--reference.mode", "model", loss="dpo")).run()
    b = metrics(tmp_path / "run2")
    for x, y in zip(a, b):  # stored and live reference log-probs give the same training
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)


def test_micro_batch_split_does_not_change_the_step(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path / "one", "--data.micro_batch_tokens", "100000")).run()
    Trainer(config(data, model, tmp_path / "many", "--data.micro_batch_tokens", "150")).run()
    one, many = metrics(tmp_path / "one"), metrics(tmp_path / "many")
    assert one[0]["micro_batches"] == 1 and many[0]["micro_batches"] > 2
    for x, y in zip(one, many):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


def test_killed_and_resumed_run_reproduces_bit_for_bit(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path / "full", "--train.max_steps", "6")).run()
    Trainer(config(data, model, tmp_path / "cut", "--train.max_steps", "3", "--checkpoint.every", "3")).run()
    # as if killed after step 3: the rerun finds the checkpoint and continues to step 6
    Trainer(config(data, model, tmp_path / "cut", "--train.max_steps", "6")).run()
    assert_resumed_run_equals_full_run(tmp_path, ("loss", "grad_norm", "update_norm", "logps/chosen", "lr"))


def test_truncated_latest_checkpoint_falls_back_with_a_warning(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path, "--train.max_steps", "4", "--checkpoint.every", "2")).run()
    latest = tmp_path / "checkpoints" / "step_00000004" / "model" / "tp_rank_00.safetensors"
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    with pytest.warns(UserWarning, match="step_00000004 is incomplete or damaged"):
        trainer = Trainer(config(data, model, tmp_path, "--train.max_steps", "4"))
    assert trainer.step == 2


def test_non_finite_steps_are_skipped_then_stop_the_run(tiny_run_inputs, tmp_path, monkeypatch):
    from megatron_redi.training import step as T

    data, model = tiny_run_inputs
    real = T.microbatch_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 2 else loss), m  # from the second micro-batch on

    monkeypatch.setattr(T, "microbatch_loss", poisoned)
    trainer = Trainer(config(data, model, tmp_path, "--train.max_bad_steps", "2", "--data.micro_batch_tokens", "100000",
                             "--optim.warmup_ratio", "0"))
    before = {k: v.clone() for k, v in trainer.master.master_tensors().items()}
    with pytest.raises(TrainingStopped, match="2 consecutive steps"):
        trainer.run()
    rows = metrics(tmp_path)
    assert rows[0].get("skipped") is None and rows[1]["skipped"] == 1
    after = trainer.master.master_tensors()
    assert all(torch.isfinite(v).all() for v in after.values())  # skipped steps changed nothing
    assert any(not torch.equal(before[k], after[k]) for k in before)  # but the good first step did


def test_export_hf_loads_with_transformers(tiny_run_inputs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path, "--train.export_hf", tmp_path / "hf", "--train.max_steps", "2")).run()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    from megatron_redi.checkpoint.native import NativeCheckpointReader
    reader = NativeCheckpointReader(str(tmp_path / "checkpoints" / "step_00000002"))  # fp32 master weights
    assert reader.dtype == torch.float32
    assert torch.equal(hf.state_dict()["model.norm.weight"], reader.read("model.norm.weight"))
    assert tok.eos_token == "<|endoftext|>"


def test_config_errors_name_the_field(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    with pytest.raises(TrainConfigError, match=r"command line: --optim.lrr: no key 'lrr' in optim"):
        config(data, model, tmp_path, "--optim.lrr", "1")
    (tmp_path / "typo.yaml").write_text("optim: {lrr: 1e-6}\n")
    with pytest.raises(TrainConfigError, match=r"typo.yaml.optim: unknown key\(s\) \['lrr'\]"):
        load_config(str(tmp_path / "typo.yaml"))
    with pytest.raises(TrainConfigError, match="optim.lr: 'fast' is not a valid float"):
        config(data, model, tmp_path, "--optim.lr", "fast")
    with pytest.raises(TrainConfigError, match="does not go with loss.type"):
        config(data, model, tmp_path, stage="sft", loss="redi")
    (tmp_path / "c.yaml").write_text("optim: {lr: 1e-6}\nmodel: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(TrainConfigError, match="not valid YAML"):  # safe_load refuses code
        load_config(str(tmp_path / "c.yaml"))


# ---- parallel equivalence ------------------------------------------------------------------------

def _run(data, model, out, *overrides):
    Trainer(config(data, model, out, *overrides)).run()


def test_tp2_equals_tp1(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    _run(data, model, tmp_path / "tp1")
    run_ranks(2, _run, data, model, tmp_path / "tp2", "--parallel.tensor_parallel", "2")
    for x, y in zip(metrics(tmp_path / "tp1"), metrics(tmp_path / "tp2")):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
        assert x["update_norm"] == pytest.approx(y["update_norm"], rel=1e-4)


def test_tp2_dp2_with_zero1_equals_tp1_dp1(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    _run(data, model, tmp_path / "ref")
    run_ranks(4, _run, data, model, tmp_path / "par", "--parallel.tensor_parallel", "2", "--parallel.zero1", "true",
              "--parallel.bucket_mb", "0.01")
    for x, y in zip(metrics(tmp_path / "ref"), metrics(tmp_path / "par")):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
        assert x["logps/chosen_mean"] == pytest.approx(y["logps/chosen_mean"], rel=1e-5)
        assert x["update_norm"] == pytest.approx(y["update_norm"], rel=1e-4)


def test_cp2_training_equals_cp1(tiny_run_inputs, tmp_path):
    """Four steps at context parallelism 2 (each micro-batch's sequences split over 2 ranks) against
    the same run on one rank: loss, LogPS, gradient and update norms to fp32 rounding."""
    data, model = tiny_run_inputs
    _run(data, model, tmp_path / "cp1")
    run_ranks(2, _run, data, model, tmp_path / "cp2", "--parallel.context_parallel", "2")
    ref, cp = metrics(tmp_path / "cp1"), metrics(tmp_path / "cp2")
    assert len(ref) == len(cp) == 4
    for x, y in zip(ref, cp):
        for key in ("loss", "logps/chosen_mean", "logps/rejected_mean", "rewards/margin", "grad_norm", "update_norm"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)
        assert x["tokens"] == y["tokens"]  # each token counted once, not once per CP rank


def test_cp2_dpo_prepass_and_in_training_evaluation(tiny_run_inputs, tmp_path):
    """DPO's reference pre-pass at CP 2 stores the log-probs CP 1 computes; the in-training
    evaluation (generation is not split along tokens) runs on the CP ranks and scores every problem."""
    import numpy as np

    data, model = tiny_run_inputs
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"{i}+{i}", "answer": str(2 * i)}) + "\n" for i in range(3)))
    for cp in (1, 2):
        shutil.copytree(data, tmp_path / f"data{cp}")
        args = (str(tmp_path / f"data{cp}"), model, tmp_path / f"run{cp}", "--reference.mode", "prepass",
                "--loss.type", "dpo", "--train.max_steps", "2", "--eval.benchmark", bench, "--eval.every", "2",
                "--eval.max_new_tokens", "4", "--parallel.context_parallel", str(cp))
        run_ranks(cp, _run, *args) if cp > 1 else _run(*args)
    one, two = (np.load(tmp_path / f"data{cp}" / "pairs" / "ref_logps.npz") for cp in (1, 2))
    np.testing.assert_allclose(two["values"], one["values"], rtol=1e-5)
    assert [r["step"] for r in metrics(tmp_path / "run2") if "eval/pass@1" in r] == [0, 2]
    for x, y in zip(metrics(tmp_path / "run1"), metrics(tmp_path / "run2")):
        assert x["step"] == y["step"] and ("eval/pass@1" in x) == ("eval/pass@1" in y)
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)


def test_zero1_run_killed_and_resumed_on_two_dp_ranks_reproduces_bit_for_bit(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    zero1 = ("--parallel.zero1", "true")
    run_ranks(2, _run, data, model, tmp_path / "full", *zero1, "--train.max_steps", "6")
    run_ranks(2, _run, data, model, tmp_path / "cut", *zero1, "--train.max_steps", "3", "--checkpoint.every", "3")
    # each DP rank saved its own slice of the AdamW moments; the rerun takes them back
    run_ranks(2, _run, data, model, tmp_path / "cut", *zero1, "--train.max_steps", "6")
    assert_resumed_run_equals_full_run(tmp_path, ("loss", "grad_norm", "update_norm", "logps/chosen"))


def _resumed_at_another_layout(tmp_path, exact):
    """``cut`` (3 steps at one layout, 3 more at another) against ``full`` (6 steps, never changed):
    equal bit for bit where the arithmetic is the same, else to fp32 rounding."""
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(full[3:], cut[3:]):
        for key in ("loss", "grad_norm", "update_norm", "logps/chosen_mean", "lr"):
            assert x[key] == y[key] if exact else x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["step"], key)


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_a_run_resumes_at_another_tp_size(tiny_run_inputs, tmp_path, before, after):
    data, model = tiny_run_inputs

    def run(out, tp, *extra):
        args = (data, model, tmp_path / out, "--parallel.tensor_parallel", str(tp), *extra)
        run_ranks(tp, _run, *args) if tp > 1 else _run(*args)

    run("full", after, "--train.max_steps", "6")
    run("cut", before, "--train.max_steps", "3", "--checkpoint.every", "3")
    run("cut", after, "--train.max_steps", "6")  # the fp32 weights and AdamW moments resharded to TP `after`
    _resumed_at_another_layout(tmp_path, exact=False)


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_a_run_resumes_at_another_context_parallel_size(tiny_run_inputs, tmp_path, before, after):
    """Checkpoints carry no trace of CP but ZeRO-1's slices (over DP x CP): saved at one CP size,
    resumed at the other."""
    data, model = tiny_run_inputs

    def run(out, cp, *extra):
        args = (data, model, tmp_path / out, "--parallel.context_parallel", str(cp), "--parallel.zero1", "true", *extra)
        run_ranks(cp, _run, *args) if cp > 1 else _run(*args)

    run("full", after, "--train.max_steps", "6")
    run("cut", before, "--train.max_steps", "3", "--checkpoint.every", "3")
    run("cut", after, "--train.max_steps", "6")
    _resumed_at_another_layout(tmp_path, exact=False)


def test_a_zero1_run_resumes_on_fewer_data_parallel_ranks(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    _run(data, model, tmp_path / "full", "--train.max_steps", "6")
    run_ranks(2, _run, data, model, tmp_path / "cut", "--parallel.zero1", "true", "--train.max_steps", "3",
              "--checkpoint.every", "3")
    # both DP ranks' slices of the moments, gathered for the one rank left; no arithmetic changes
    # except the data-parallel sum of the first three steps' gradients
    _run(data, model, tmp_path / "cut", "--train.max_steps", "6")
    _resumed_at_another_layout(tmp_path, exact=False)


def test_zero1_slices_gathered_on_resume_are_bit_exact(tiny_run_inputs, tmp_path):
    """ZeRO-1 on 2 DP ranks, resumed on the same 2 ranks without it: the same arithmetic, so the
    moments gathered from both slices must give exactly the never-sharded run's steps."""
    data, model = tiny_run_inputs
    run_ranks(2, _run, data, model, tmp_path / "full", "--train.max_steps", "6")
    run_ranks(2, _run, data, model, tmp_path / "cut", "--parallel.zero1", "true", "--train.max_steps", "3",
              "--checkpoint.every", "3")
    run_ranks(2, _run, data, model, tmp_path / "cut", "--train.max_steps", "6")
    _resumed_at_another_layout(tmp_path, exact=True)


def test_older_checkpoints_keep_their_weights_for_picking_the_best_step(tiny_run_inputs, tmp_path):
    from megatron_redi.checkpoint.native import NativeCheckpointReader
    from megatron_redi.model import from_pretrained

    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path / "run", "--train.max_steps", "6", "--checkpoint.every", "2",
                   "--checkpoint.keep", "1")).run()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(os.listdir(root)) == ["step_00000002", "step_00000004", "step_00000006"]
    assert (root / "step_00000006" / "training" / "state.json").exists()  # the newest: whole
    for step in (2, 4):
        path = root / f"step_{step:08d}"
        assert not (path / "training").exists()
        reader = NativeCheckpointReader(str(path))
        assert reader.dtype == torch.bfloat16 and reader.metadata["weights_only"]
        assert reader.metadata["training_step"] == step
        from_pretrained(str(path))  # what the evaluator loads
    whole = Trainer(config(data, model, tmp_path / "run", "--train.max_steps", "8"))
    assert whole.step == 6  # resumption takes the whole one

    Trainer(config(data, model, tmp_path / "lean", "--train.max_steps", "6", "--checkpoint.every", "2",
                   "--checkpoint.keep", "1", "--checkpoint.keep_weights", "false")).run()
    assert os.listdir(tmp_path / "lean" / "checkpoints") == ["step_00000006"]


def test_only_weights_left_is_not_silently_restarted_over(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path, "--train.max_steps", "4", "--checkpoint.every", "2",
                   "--checkpoint.keep", "1")).run()
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000004")
    with pytest.raises(Exception, match="none of its 1 checkpoints can be resumed"):
        Trainer(config(data, model, tmp_path, "--train.max_steps", "4"))
    assert (tmp_path / "checkpoints" / "step_00000002").exists()


def test_schedule_over_max_steps_is_hf_s_behaviour(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path / "epochs")).run()  # 4 steps of a longer epoch schedule
    Trainer(config(data, model, tmp_path / "steps", "--train.schedule", "max_steps")).run()
    by_epochs, by_steps = metrics(tmp_path / "epochs"), metrics(tmp_path / "steps")
    assert [r["lr"] for r in by_steps] == pytest.approx([0.0, 1e-3, 2e-3 / 3, 1e-3 / 3], rel=1e-4)  # warmup, decay to 0
    assert by_epochs[-1]["lr"] > by_steps[-1]["lr"]


def test_in_training_evaluation_is_cheap_by_default_and_says_its_cost(tiny_run_inputs, tmp_path, capsys):
    cfg = load_config(None, ["--model.path", "m", "--data.path", "d"]).eval
    assert (cfg.samples, cfg.max_new_tokens, cfg.max_problems, cfg.temperature, cfg.top_p) == (1, 4096, 100, 0.6, 0.95)
    data, model = tiny_run_inputs
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"{i}+{i}", "answer": str(2 * i)}) + "\n" for i in range(3)))
    Trainer(config(data, model, tmp_path / "run", "--eval.benchmark", bench, "--eval.every", "2",
                   "--eval.max_new_tokens", "4")).run()
    evaluated = [r["step"] for r in metrics(tmp_path / "run") if "eval/pass@1" in r]
    assert evaluated == [0, 2, 4]  # the start, every 2 steps, the last
    assert all(r["eval/seconds"] > 0 for r in metrics(tmp_path / "run") if "eval/seconds" in r)
    told = capsys.readouterr().out
    assert "in-training evaluation: 3 problems x 1 samples of up to 4 tokens took" in told
    assert "2 more in this run: about" in told and told.count("in-training evaluation") == 1


def test_checkpoints_at_the_end_of_each_epoch(tiny_run_inputs, tmp_path):
    """checkpoint.every: epoch, as the paper saved its SFT runs (an epoch is not a round number of steps)."""
    from megatron_redi.training import Trainer, checkpointing

    data, model = tiny_run_inputs
    trainer = Trainer(config(data, model, tmp_path / "run", "--checkpoint.every", "epoch", "--checkpoint.keep", "5",
                             "--train.epochs", "2", "--train.max_steps", "1000", stage="sft", loss="sft"))
    per_epoch = trainer.sampler.steps_per_epoch
    trainer.run()
    steps = sorted(step for step, _ in checkpointing.checkpoint_dirs(str(tmp_path / "run" / "checkpoints")))
    assert steps == [per_epoch, 2 * per_epoch] and per_epoch > 1
