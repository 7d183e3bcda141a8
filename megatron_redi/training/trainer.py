"""The training loop: SFT (stage 1) or a pairwise loss (stage 2), over TP x CP x DP ranks.

Each step: the sampler plans the global batch (this DP rank's items and the global totals, P pairs
or SFT's N response tokens, identical on every rank); the rank's items are packed into micro-batches
of at most data.micro_batch_tokens tokens; ``step.forward_backward`` runs them; one all-reduce and
one host sync bring the loss, the metrics and the gradient norm; a non-finite step is skipped, else
``step.optimizer_step`` clips and updates. Around the steps: evaluation, metrics, the collapse
alarm, checkpoints and resumption, the HF export.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint.hf_mapping import CheckpointError
from ..checkpoint.native import NativeCheckpointReader, copy_side_files, write_hf
from ..data import DatasetError, GlobalBatchSampler, TokenizedData, TrainingItem, pack
from ..atomic import atomic_directory, atomic_file, check_output, content_digest, fingerprint
from ..settings import DTYPES, ConfigError, local_directory, tokenizer_directory
from ..model import from_pretrained
from ..parallel import collectives, initialize, shutdown
from . import checkpointing
from .checkpoint_writer import CheckpointWriter, remove_interrupted_saves
from .config import TrainConfig, to_dict
from .metrics import CollapseAlarm, MetricsLogger, mfu_peak_tflops, step_flops, sum_over_dp
from .optimizer import MasterParams, lr_at
from .reference import reference_logps
from .reshard import same_layout
from .step import forward_backward, optimizer_step
from .stop_signals import StopSignals
from .trackers import TrackerError, parse as parse_trackers


class TrainingStopped(RuntimeError):
    """The run stopped on purpose: too many bad steps, or the collapse alarm with collapse.stop."""


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.train.seed)
        self.parallel = p = initialize(tensor_parallel_size=cfg.parallel.tensor_parallel,
                                       sequence_parallel=cfg.parallel.sequence_parallel,
                                       timeout_minutes=cfg.parallel.timeout_minutes,
                                       context_parallel_size=cfg.parallel.context_parallel)
        self.is_main = p.rank == 0
        # what the run reads: no output of it may be, contain or lie inside one of these
        self.inputs = tuple(path for path in (cfg.model.path, cfg.data.path, cfg.reference.path, cfg.eval.benchmark)
                            if path)
        check_output(cfg.train.output_dir, overwrite=True, keep=self.inputs)
        if cfg.train.export_hf:  # refused now rather than after the training
            checkpointing.check_export_target(cfg.train.export_hf, cfg.train.output_dir, cfg.train.export_overwrite,
                                              self.inputs)
        self._lock = checkpointing.lock_run_directory(cfg.train.output_dir, p)
        self.dtype = DTYPES[cfg.model.dtype]
        self.data = TokenizedData(cfg.data.path)
        self.eval_inputs = self._eval_inputs() if cfg.eval.every and cfg.eval.benchmark else None
        self.sft = cfg.train.stage == "sft"
        dataset = self.data.sft if self.sft else self.data.pairs
        lengths = dataset.total_lengths()
        responses = dataset.response_lengths() if self.sft else np.zeros(len(dataset), np.int64)
        try:
            self.sampler = GlobalBatchSampler(lengths, responses, cfg.data.global_batch, p.dp_rank, p.dp_size,
                                              cfg.data.seed, cfg.data.shuffle)
        except ValueError as e:  # too few items for one global batch, or fewer than the DP ranks
            raise DatasetError(f"{cfg.data.path}: {e}") from None
        self.total_steps = self.sampler.steps_per_epoch * cfg.train.epochs
        # the learning-rate schedule's length: the epochs', or max_steps' when asked (HF Trainer's way)
        t = cfg.train
        self.schedule_steps = t.max_steps if t.schedule == "max_steps" and t.max_steps else self.total_steps
        self.model = self._load_model(cfg.model.path)
        self.data.check(self.model.cfg.vocab_size)  # now, not as an index error mid-run
        self.master = MasterParams(self.model, p, cfg.parallel.zero1, cfg.parallel.bucket_mb)
        self.pad_token = int(self.data.meta["eos_token_id"])
        self.step, self.bad_steps = 0, 0
        self.resumed_from, self.resumed_step = None, None  # the checkpoint this run started from
        self.started_from = {"model": content_digest(cfg.model.path),
                             "data": (self.data.sft if self.sft else self.data.pairs).identity()}
        self.alarm = CollapseAlarm(cfg.collapse.window, cfg.collapse.drop)
        self.peak_tflops = mfu_peak_tflops(p.device, cfg.train.peak_tflops)
        self.ckpt_root = os.path.join(cfg.train.output_dir, "checkpoints")
        self.thinning = checkpointing.Thinning(enabled=self.is_main)
        remove_interrupted_saves(self.ckpt_root, p)
        thin = functools.partial(self.thinning.start, self.ckpt_root, cfg.checkpoint.keep, cfg.checkpoint.keep_weights)
        # asynchronous only where a save can overlap training: the final one is waited for anyway
        self.checkpoints = CheckpointWriter(self.ckpt_root, p, cfg.checkpoint.async_save and cfg.checkpoint.every != 0,
                                            60 * cfg.parallel.timeout_minutes, on_published=thin)
        self._resume()
        self.checkpoints.reserve(self.model.cfg, self.master.master_tensors(), self.master.state_tensors(),
                                 cfg.parallel.zero1)
        self.reference = None
        if cfg.loss.needs_reference:
            self._setup_reference()
        self.logger = self._metrics_logger()
        if self.is_main:
            with atomic_file(os.path.join(cfg.train.output_dir, "config.json")) as f:
                json.dump(to_dict(cfg), f, indent=2)

    # ---- setup ----------------------------------------------------------------------------------

    def _metrics_logger(self) -> MetricsLogger:
        """metrics.jsonl and the trackers (rank 0), started now: one that cannot start stops every rank
        here, before the first step."""
        t = self.cfg.train
        names = [n for n in parse_trackers(t.trackers) if n != "tensorboard" or t.tensorboard]
        error = None
        try:
            logger = MetricsLogger(t.output_dir, self.is_main, resume_step=self.step, trackers=names,
                                   config=to_dict(self.cfg))
        except TrackerError as e:
            error = e
        if collectives.any_rank(self.parallel, error is not None):
            raise error or TrackerError("a tracker could not start on rank 0 (its message is there)")
        return logger

    def _load_model(self, path, trainable=True):
        m = self.cfg.model
        model = from_pretrained(path, self.parallel, dtype=self.dtype, recompute=m.recompute if trainable else "none",
                                attention_backend=m.attention_backend, rope_theta=m.rope_theta,
                                max_position_embeddings=m.max_position_embeddings)
        if not trainable:
            model.requires_grad_(False).eval()
        return model

    def _resume(self):
        if not self.cfg.checkpoint.resume:
            existing = checkpointing.checkpoint_dirs(self.ckpt_root)
            if existing:  # starting over would replace and rotate them away
                raise CheckpointError(f"{self.ckpt_root} holds checkpoints of an earlier run (the newest: "
                                      f"{existing[0][1]}); set checkpoint.resume true to continue it, or "
                                      "choose another train.output_dir")
            return
        found = checkpointing.find_resumable(self.ckpt_root, self.parallel)
        if found is None:
            return
        path, state = found
        try:  # first, before the tensors are read: the inputs and settings must be the checkpoint's
            self._check_same_run(state)
            self.sampler.load_state_dict(state["sampler"])
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}; resume with the settings of the run (its config.json), or choose "
                              "another train.output_dir") from None
        master, optim = checkpointing.load(path, state, self.parallel, self.master)
        self.master.load_master(master)
        self.master.load_state_tensors(optim, state["optimizer_steps"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.resumed_from, self.resumed_step = path, self.step
        self.alarm.chosen, self.alarm.rejected = state["alarm"]["chosen"], state["alarm"]["rejected"]
        if self.is_main:
            moved = ("" if same_layout(state, self.parallel, self.master.zero1)
                     else f", resharded from TP {state['tp_size']} x DP {state['dp_size']}"
                          f"{' with ZeRO-1' if state['zero1'] else ''}")
            print(f"resumed from {path} (step {self.step}{moved})", flush=True)

    # what a resumed run must have started from, as the checkpoint's run did (the data's order and
    # batches: the sampler's own check)
    SAME_RUN = {"model": "model.path", "data": "data.path"}
    SAME_SETTINGS = (("train", "stage"), ("loss", None))

    def _check_same_run(self, state: dict) -> None:
        """Refuse a checkpoint made from another model, other data, another stage or loss (checkpoints
        written before inputs were identified carry no ``started_from`` and are not checked)."""
        before, changed = state.get("config", {}), []
        for key, name in self.SAME_RUN.items():
            if key in state.get("started_from", {}) and state["started_from"][key] != self.started_from[key]:
                section, field = name.split(".")
                was = before.get(section, {}).get(field)
                changed.append(f"{name} holds other files than the run started from ({was})")
        now = to_dict(self.cfg)
        for section, field in self.SAME_SETTINGS:
            old, new = before.get(section), now[section]
            if old is None:
                continue
            for key in ([field] if field else sorted(new)):
                if key in old and old[key] != new[key]:
                    changed.append(f"{section}.{key} {old[key]} -> {new[key]}")
        if changed:
            raise ConfigError(f"the checkpoint's run differs from this one: {', '.join(changed)}")

    def _setup_reference(self):
        ref_path = self.cfg.reference.path or self.cfg.model.path
        if self.cfg.reference.mode == "model":
            self.reference = self._load_model(ref_path, trainable=False)
            return
        reference = json.dumps(fingerprint(local_directory(ref_path, "reference.path")))  # retrained: another
        pairs = self.data.pairs
        if pairs.stored_reference() == reference:
            return  # computed by an earlier run for the same reference
        d, p = self.cfg.data, self.parallel
        values = reference_logps(self._load_model(ref_path, trainable=False), pairs, p, d.micro_batch_tokens,
                                 self.pad_token, d.global_batch, self.is_main and self.cfg.train.progress)
        if self.is_main:
            pairs.store_reference_logps(values.cpu().numpy(), reference)
        collectives.barrier(p)
        self.data = TokenizedData(d.path)

    # ---- one step ---------------------------------------------------------------------------------

    def units(self, items):
        if self.sft:
            return [TrainingItem(i, (self.data.sft[i],)) for i in items]
        ref = self.data.pairs.ref_logps
        return [TrainingItem(i, self.data.pairs[i], None if ref is None else tuple(float(x) for x in ref[i])) for i in items]

    def micro_batches(self, items):
        pad = self.parallel.tp_size if self.parallel.sequence_parallel else 1
        return pack(self.units(items), self.cfg.data.micro_batch_tokens, pad, self.pad_token)

    def _global_total(self, plan) -> float:
        if not self.sft or self.cfg.loss.per_sequence_mean:
            return float(plan.global_items)
        return float(plan.global_response_tokens)

    def train_step(self, plan) -> dict:
        """The micro-batch loop, the step's metrics, then the update."""
        cfg, device = self.cfg, self.parallel.device
        start = time.perf_counter()
        batches = self.micro_batches(plan.items)
        work = forward_backward(self.model, self.master, batches, cfg.loss, self._global_total(plan), self.reference)
        grad_norm = self.master.grads.norm()

        # one all-reduce (DP) for the loss, the metric sums and the work done, then one host sync; the grad
        # norm is already global (identical on DP ranks)
        names = sorted(work.metric_sums)
        flops = step_flops(self.model.cfg, work.seq_lengths, work.response_tokens)
        summed, (grad_norm,) = sum_over_dp(self.parallel, [work.loss, *(work.metric_sums[n] for n in names),
                                                           sum(work.seq_lengths), flops], [grad_norm])
        loss_value, tokens, flops = summed[0], summed[-2], summed[-1]
        out = {"loss": loss_value}
        out.update({n: v / plan.global_items for n, v in zip(names, summed[1:1 + len(names)])})

        lr = lr_at(self.step, self.schedule_steps, cfg.optim.lr, cfg.optim.warmup_ratio)
        if not (np.isfinite(loss_value) and np.isfinite(grad_norm)):
            self.bad_steps += 1
            out.update(skipped=1, grad_norm=grad_norm)
            if self.bad_steps >= cfg.train.max_bad_steps:
                raise TrainingStopped(f"{self.bad_steps} consecutive steps with a non-finite loss or gradient")
        else:
            self.bad_steps = 0
            update_norm = optimizer_step(self.master, grad_norm, lr, cfg.optim).item()
            out.update(grad_norm=grad_norm, update_norm=update_norm)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        out.update(lr=lr, tokens=int(tokens), tokens_per_s=tokens / elapsed, step_time_s=elapsed,
                   micro_batches=len(batches), full_recompute_layers=work.full_recompute_layers)
        if self.peak_tflops:  # the TP and CP ranks of a DP rank shared its work: counted once
            out["mfu"] = flops / elapsed / (self.peak_tflops * 1e12 * self.parallel.world_size)
        return out

    # ---- the run ----------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {"step": self.step, "optimizer_steps": self.master.step_count, "sampler": self.sampler.state_dict(),
                "bad_steps": self.bad_steps, "alarm": {"chosen": self.alarm.chosen, "rejected": self.alarm.rejected},
                "config": to_dict(self.cfg), "started_from": self.started_from}

    def save_checkpoint(self, wait: bool = False) -> str:
        """Start the checkpoint of this step (once: a second call for the same step finds it) and
        return its path; ``wait``: return once it is complete on every rank."""
        save = self.checkpoints.last
        if not (save and save.step == self.step):
            if not self.master.all_finite():  # never persist broken weights
                raise TrainingStopped("the master weights hold NaN or inf; no checkpoint written")
            side = self.data.tokenizer_dir if os.path.isdir(self.data.tokenizer_dir) else self.cfg.model.path
            save = self.checkpoints.start(self.step, self.model.cfg, self.master.master_tensors(),
                                               self.master.state_tensors(), self.cfg.parallel.zero1, self._state(), side)
        if wait:
            self.checkpoints.wait()
        return save.final

    def _checkpoint_boundary(self, last: int) -> dict:
        """At the end of a step: the save in flight settled (raising if it failed on any rank), and
        this step's save started when due; how long each took, for the metrics."""
        out = {}
        if done := self.checkpoints.poll():
            out["checkpoint/write_s"] = done.seconds
        if self._checkpoint_due() and self.step < last:
            start = time.perf_counter()
            self.save_checkpoint()
            out["checkpoint/stall_s"] = time.perf_counter() - start
        return out

    def _eval_inputs(self):
        """The in-training evaluation's tokenizer and problems, read before the model is loaded: a
        bad benchmark stops the run at once, not at its first evaluation."""
        from transformers import AutoTokenizer

        from ..eval import load_benchmark

        e = self.cfg.eval
        problems = load_benchmark(e.benchmark, e.max_problems)
        tokenizer_dir = self.data.tokenizer_dir if os.path.isdir(self.data.tokenizer_dir) else self.cfg.model.path
        return AutoTokenizer.from_pretrained(tokenizer_directory(tokenizer_dir)), problems

    def evaluate(self) -> dict:
        """pass@1 (and its SEM) on the held-out benchmark, with the model as it is now."""
        from ..eval import evaluate

        e = self.cfg.eval
        tokenizer, problems = self.eval_inputs
        start = time.perf_counter()
        _, summary = evaluate(self.model, tokenizer, problems, e, seed=self.cfg.train.seed)  # e is a Protocol
        seconds = time.perf_counter() - start
        if self.is_main and not hasattr(self, "_eval_told"):
            self._eval_told = True
            more = self._evaluations_left()
            tqdm.write(f"in-training evaluation: {len(problems)} problems x {e.samples} samples of up to "
                       f"{e.max_new_tokens:,} tokens took {seconds:.0f} s; {more} more in this run: about "
                       f"{more * seconds / 60:.0f} min (eval.every, eval.max_problems, eval.samples set it)")
        return {"eval/pass@1": summary["pass@1"], "eval/sem": summary["sem"], "eval/seconds": seconds}

    def _evaluations_left(self) -> int:
        """Evaluations still to come after this step: every eval.every steps, and at the last step."""
        every, last = self.cfg.eval.every, min(self.total_steps, self.cfg.train.max_steps or self.total_steps)
        due = set(range((self.step // every + 1) * every, last + 1, every)) | {last}
        return len(due - {self.step})

    def _eval_due(self) -> bool:
        e = self.cfg.eval
        return bool(e.every and e.benchmark and self.step % e.every == 0)

    def run(self) -> str:
        try:
            return self._run()
        except BaseException:
            self.checkpoints.abandon()  # this rank's part finished; an incomplete save is never published
            raise
        finally:
            self.thinning.wait()  # however the run ends, no checkpoint is left half thinned by this process
            self.logger.close()

    def _run(self) -> str:
        cfg = self.cfg
        last = min(self.total_steps, cfg.train.max_steps or self.total_steps)
        bar = tqdm(total=last, initial=self.step, desc=f"{cfg.train.stage} ({cfg.loss.type})", unit="step",
                   disable=not (self.is_main and cfg.train.progress), dynamic_ncols=True)
        with StopSignals() as signals, bar:
            if self.step == 0 and self._eval_due():  # the starting point of Figure 6's accuracy curve
                self.logger.log(0, self.evaluate())
            while self.step < last:
                plan = self.sampler.plan()
                out = self.train_step(plan)
                self.sampler.advance()
                self.step += 1
                out["epoch"] = plan.epoch + (plan.step + 1) / self.sampler.steps_per_epoch
                if not self.sft and "logps/chosen_mean" in out:
                    message = self.alarm.update(out["logps/chosen_mean"], out["logps/rejected_mean"])
                    if message and self.is_main:
                        tqdm.write(f"step {self.step}: {message}", file=sys.stderr)  # whatever the warning filters
                        self.logger.event(self.step, message)
                    out["collapse_alarm"] = int(self.alarm.fired)
                if self._eval_due() or (self.step == last and cfg.eval.every and cfg.eval.benchmark):
                    out.update(self.evaluate())
                out.update(self._checkpoint_boundary(last))
                if (self.step % cfg.train.log_every == 0 or self.step == last or "eval/pass@1" in out
                        or any(key.startswith("checkpoint/") for key in out)):
                    self.logger.log(self.step, out)
                shown = {"loss": f"{out['loss']:.4f}", "lr": f"{out['lr']:.2e}"}
                if "logps/chosen_mean" in out:  # the paper's LogPS, the numbers that show a collapse
                    shown.update(chosen=f"{out['logps/chosen_mean']:.3f}", rejected=f"{out['logps/rejected_mean']:.3f}")
                bar.set_postfix(shown, refresh=False)
                bar.update()
                if self.alarm.fired and cfg.collapse.stop:
                    self.save_checkpoint(wait=True)
                    raise TrainingStopped("stopped by the collapse alarm (collapse.stop is set)")
                if self._stop_requested(signals) and self.step < last:  # the save in flight finishes first
                    path = self.save_checkpoint(wait=True)
                    raise TrainingStopped(f"{signals.received or 'a signal to another rank'} after step {self.step}: "
                                          f"checkpoint {path} written; run the same command again to resume")
            # The last save and the export run under the same handlers: a signal meanwhile lets them
            # finish, then the run stops as at any other step (exit 3), and the same command finishes it.
            final = self.resumed_from if self.resumed_step == self.step else self.save_checkpoint(wait=True)
            if self._stop_requested(signals):
                raise TrainingStopped(f"{signals.received or 'a signal to another rank'} during the final save: "
                                      f"checkpoint {final} written" + ("; run the same command again to export"
                                                                       if cfg.train.export_hf else ""))
            if cfg.train.export_hf:
                self.export_hf(final, cfg.train.export_hf)
                if self._stop_requested(signals):
                    raise TrainingStopped(f"{signals.received or 'a signal to another rank'} during the export: "
                                          f"{cfg.train.export_hf} written; the run is complete")
        return final

    def _checkpoint_due(self) -> bool:
        every = self.cfg.checkpoint.every
        if every == "epoch":  # the paper's SFT checkpoints (its Figure 2 is per epoch)
            return self.step % self.sampler.steps_per_epoch == 0
        return bool(every) and self.step % every == 0

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Whether any rank received a signal: one answer for all, so that all take the same branch."""
        return collectives.any_rank(self.parallel, signals.received is not None)

    def export_hf(self, checkpoint: str, out_dir: str):
        if self.is_main:
            t = self.cfg.train
            checkpointing.check_export_target(out_dir, t.output_dir, t.export_overwrite, self.inputs)
            reader = NativeCheckpointReader(checkpoint)
            with atomic_directory(out_dir, overwrite=t.export_overwrite) as tmp:
                copy_side_files(checkpoint, tmp)
                write_hf(reader, reader.cfg, tmp, self.dtype, 5 * 10**9, progress=False)
        collectives.barrier(self.parallel)


def train(cfg: TrainConfig) -> str:
    """Train, and leave the process group however the run ends."""
    try:
        return Trainer(cfg).run()
    finally:
        shutdown()
