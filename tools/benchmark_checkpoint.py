#!/usr/bin/env python
"""How long a checkpoint stops the training: synchronous against asynchronous saves, and this
library's writer against torch.distributed.checkpoint (DCP).

    python tools/benchmark_checkpoint.py OUT                     qwen2.5-0.5b shapes, 2 ranks, ZeRO-1
    python tools/benchmark_checkpoint.py OUT --preset tiny --steps 6 --every 2 --saves 2   (smoke)

training: the trainer itself (torchrun, --ranks ranks on this machine, ZeRO-1, random weights of
the preset's shapes, the synthetic corpus) runs --steps steps with a checkpoint every --every,
with checkpoint.async_save false and true alternated A B A B (--repeats pairs). From each run's
metrics.jsonl: every save's stall (checkpoint/stall_s, the time the training waited), its
background write (checkpoint/write_s), and the step time of steps with no save in flight against
steps with one (the first step, a warm-up, left out).

mechanisms: the same state (the preset's MasterParams on --ranks ranks, ZeRO-1) saved --saves
times by each of: this library's writer asynchronous and synchronous, DCP's async_save and save;
alternated A B A B, one torchrun per mechanism and repeat. Stall: until the call returns;
complete: until the checkpoint is on disk (the slowest rank of each). And whether loading a DCP
checkpoint executes its metadata file (a pickle that writes a file when loaded).

Writes OUT/checkpoint_benchmark.json and prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time

import torch

from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.model_config import PRESETS, preset

MECHANISMS = ("own_async", "dcp_async", "own_sync", "dcp_sync")


def _torchrun(ranks: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def model_config(name: str, layers: int | None):
    return preset(name, **({"num_hidden_layers": layers} if layers else {}))


def make_inputs(out: str, cfg) -> tuple[str, str]:
    """The synthetic corpus tokenised, and random weights of the preset's shapes (bf16 on disk)."""
    from megatron_redi.data import synthetic
    from megatron_redi.data.preprocess import Options, preprocess
    from megatron_redi.fixtures import make_tiny_tokenizer, write_random_hf_checkpoint

    data = os.path.join(out, "inputs", "data")
    model = os.path.join(out, "inputs", f"model_{cfg.num_parameters() // 10**6}M")
    if not os.path.isdir(data):
        raw = os.path.join(out, "inputs", "traces.jsonl")
        synthetic.write_corpus(raw, rows=120, digits=3, seed=0)
        tokenizer = os.path.join(out, "inputs", "tokenizer")
        make_tiny_tokenizer(tokenizer, 512, texts=synthetic.tokenizer_corpus(3, samples=100))
        preprocess([raw], data, Options(tokenizer=tokenizer), progress=False)
    if not os.path.isdir(model):
        write_random_hf_checkpoint(model, cfg)
    return data, model


# ---- training: the trainer's own stall -----------------------------------------------------------

def training_run(args, data: str, model: str, asynchronous: bool, run: str) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    cmd = _torchrun(args.ranks, ["-m", "megatron_redi.train", "--model.path", model, "--data.path", data,
                                 "--model.dtype", args.dtype, "--parallel.zero1", "true",
                                 "--data.global_batch", str(2 * args.ranks), "--data.micro_batch_tokens", "4096",
                                 "--train.max_steps", str(args.steps), "--train.output_dir", run,
                                 "--train.progress", "false", "--train.tensorboard", "false",
                                 "--checkpoint.every", str(args.every), "--checkpoint.keep", "1",
                                 "--checkpoint.keep_weights", "false",
                                 "--checkpoint.async_save", str(asynchronous).lower()])
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the training run failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    shutil.rmtree(os.path.join(run, "checkpoints"), ignore_errors=True)  # gigabytes each
    writing, quiet, busy = False, [], []
    for row in rows[1:]:  # the first step warms up
        (busy if writing else quiet).append(row["step_time_s"])
        if "checkpoint/write_s" in row:
            writing = False
        if "checkpoint/stall_s" in row and asynchronous:
            writing = True
    return {"stall_s": [r["checkpoint/stall_s"] for r in rows if "checkpoint/stall_s" in r],
            "write_s": [r["checkpoint/write_s"] for r in rows if "checkpoint/write_s" in r],
            "step_s_no_save_in_flight": quiet, "step_s_save_in_flight": busy}


# ---- mechanisms: this library's writer against DCP, on the same state -----------------------------

def worker(mechanism: str, cfg, saves: int, out: str) -> None:
    """One rank under torchrun: build the preset's optimizer state and save it ``saves`` times."""
    import torch.distributed.checkpoint as dcp

    from megatron_redi.model import Decoder
    from megatron_redi.parallel import collectives, initialize, shutdown
    from megatron_redi.training.checkpoint_writer import CheckpointWriter
    from megatron_redi.training.optimizer import MasterParams

    p = initialize()
    torch.manual_seed(0)
    master = MasterParams(Decoder(cfg, p, dtype=torch.bfloat16), p, zero1=True)
    writer = CheckpointWriter(os.path.join(out, "own"), p, mechanism == "own_async", 3600.0)
    stalls, completes = [], []
    for i in range(saves):
        collectives.barrier(p)
        start = time.perf_counter()
        if mechanism.startswith("own"):
            writer.start(i + 1, cfg, master.master_tensors(), master.state_tensors(), True, {}, None)
            stalls.append(time.perf_counter() - start)
            writer.wait()
        else:  # DCP: the weights under one name on every rank (it writes replicated tensors once), moments per rank
            state = {**{f"model.{k}": v for k, v in master.master_tensors().items()},
                     **{f"optim.dp{p.dp_cp_rank}.{k}": v for k, v in master.state_tensors().items()}}
            where = os.path.join(out, "dcp", f"save_{i + 1}")
            if mechanism == "dcp_async":
                future = dcp.async_save(state, checkpoint_id=where)
                stalls.append(time.perf_counter() - start)
                future.result()
            else:
                dcp.save(state, checkpoint_id=where)
                stalls.append(time.perf_counter() - start)
        completes.append(time.perf_counter() - start)
        if p.rank == 0:
            shutil.rmtree(os.path.join(out, "dcp", f"save_{i}"), ignore_errors=True)
    times = collectives.all_gather_objects(p, (stalls, completes), None)
    if p.rank == 0:
        slowest = [[max(t[k][i] for t in times) for i in range(saves)] for k in (0, 1)]
        with open(os.path.join(out, "times.json"), "w") as f:
            json.dump({"stall_s": slowest[0], "complete_s": slowest[1]}, f)
    shutdown()


def mechanism_run(args, mechanism: str, out: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proc = subprocess.run(_torchrun(args.ranks, [os.path.abspath(__file__), "--worker", mechanism, "--preset",
                                                 args.preset, "--layers", str(args.layers or 0), "--saves",
                                                 str(args.saves), out]),
                          env={**_env(), "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mechanism} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "times.json")) as f:
        times = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return times


class _Marker:
    """Unpickling this writes ``path``: what loading a file executes."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def dcp_metadata_executes_code(out: str) -> bool:
    """Save a tensor with DCP, put a pickle that creates a file in place of its metadata file, load."""
    import torch.distributed.checkpoint as dcp

    where, marker = os.path.join(out, "dcp_probe"), os.path.join(out, "dcp_probe_executed")
    shutil.rmtree(where, ignore_errors=True)
    dcp.save({"x": torch.zeros(4)}, checkpoint_id=where)
    metadata = os.path.join(where, ".metadata")
    with open(metadata, "wb") as f:
        pickle.dump(_Marker(marker), f)
    try:
        dcp.load({"x": torch.zeros(4)}, checkpoint_id=where)
    except (Exception, dcp.api.CheckpointException):  # the marker is the answer, not the load
        pass
    executed = os.path.exists(marker)
    shutil.rmtree(where, ignore_errors=True)
    if executed:
        os.remove(marker)
    return executed


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("out", help="a working directory (inputs, runs, checkpoint_benchmark.json)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-0.5b", help="model shapes")
    parser.add_argument("--layers", type=int, help="the preset's shapes with this many layers (default: all)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks (data parallel, ZeRO-1)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="the training's compute dtype")
    parser.add_argument("--steps", type=int, default=13, help="training steps per run")
    parser.add_argument("--every", type=int, default=4, help="steps between checkpoints")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs of each comparison")
    parser.add_argument("--saves", type=int, default=3, help="saves per mechanism run")
    parser.add_argument("--skip", choices=["training", "mechanisms"], help="leave one part out")
    parser.add_argument("--worker", choices=MECHANISMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, model_config(args.preset, args.layers), args.saves, args.out)
        return 0
    os.makedirs(args.out, exist_ok=True)
    cfg = model_config(args.preset, args.layers)
    report = {"preset": args.preset, "layers": cfg.num_layers, "parameters": cfg.num_parameters(), "ranks": args.ranks, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    if args.skip != "training":
        data, model = make_inputs(args.out, cfg)
        runs = {"sync": [], "async": []}
        for i in range(args.repeats):
            for mode in ("sync", "async"):
                runs[mode].append(training_run(args, data, model, mode == "async",
                                               os.path.join(args.out, "runs", f"{mode}_{i}")))
                print(f"training {mode} {i}: stalls {[round(s, 3) for s in runs[mode][-1]['stall_s']]}", flush=True)
        summary = {}
        for mode, results in runs.items():
            pooled = {key: [v for r in results for v in r[key]] for key in results[0]}
            summary[mode] = {key: _median(values) for key, values in pooled.items()}
        summary["stall_ratio_pair_by_pair"] = [
            statistics.median(s["stall_s"]) / statistics.median(a["stall_s"]) for s, a in zip(runs["sync"], runs["async"])]
        report["training"] = {"settings": {k: getattr(args, k) for k in ("steps", "every", "dtype")},
                              "runs": runs, "medians": summary}
    if args.skip != "mechanisms":
        results = {m: [] for m in MECHANISMS}
        for i in range(args.repeats):
            for mechanism in MECHANISMS:
                results[mechanism].append(mechanism_run(args, mechanism, os.path.join(args.out, "mechanism")))
                print(f"{mechanism} {i}: {results[mechanism][-1]}", flush=True)
        report["mechanisms"] = {"runs": results, "medians": {
            m: {key: _median([v for r in rs for v in r[key]]) for key in ("stall_s", "complete_s")}
            for m, rs in results.items()}}
        report["dcp_metadata_executes_code_on_load"] = dcp_metadata_executes_code(args.out)
    with atomic_file(os.path.join(args.out, "checkpoint_benchmark.json")) as f:
        json.dump(report, f, indent=2)
    for part in ("training", "mechanisms"):
        if part in report:
            print(f"{part} (medians, s):")
            for name, values in report[part]["medians"].items():
                print(f"  {name:<24} {values}")
    if "dcp_metadata_executes_code_on_load" in report:
        print(f"loading a DCP checkpoint executes its metadata file: {report['dcp_metadata_executes_code_on_load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
