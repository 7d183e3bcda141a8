"""vLLM as the generation engine of tools/evaluate.py (``--engine vllm``), for the final protocol's
scale: the paper's five benchmarks at 16 samples of up to 32,768 tokens are some 25,000 long
generations per checkpoint.

vLLM only generates: the prompts are this package's (``prompt_text``, byte for byte the built-in
engine's), and the texts and token counts go through the same scoring, SEM, result files and
resumption (``runner.score``). A native checkpoint is exported to HF format into a temporary
directory, removed afterwards; an HF checkpoint is used as it is. vLLM runs tensor parallel within
a replica (``tp`` GPUs) and one replica per group of ``tp`` GPUs, each on its share of the problems.

Each (checkpoint, replica) runs in a process of its own, spawned and not daemonic: vLLM starts
processes of its own, which a daemonic worker (a ``multiprocessing.Pool``'s) may not, and the GPU
memory of an ``LLM`` is returned only when its process ends, so the next checkpoint starts on an
empty card. Results come back through a queue; a replica that fails or dies fails the evaluation
with its traceback or exit code.
Every prompt carries its own seed (the evaluation's seed and the problem's index), so the samples do
not depend on how the problems are shared out.

Written against vLLM's offline interface as documented for versions 0.6 to 0.10: ``LLM(model,
tokenizer, tensor_parallel_size, dtype, seed, max_model_len)``, ``SamplingParams(n, temperature,
top_p, max_tokens, seed)``, ``LLM.generate(prompts, [params, ...])`` returning one output per
prompt whose ``outputs`` hold ``text`` and ``token_ids`` per sample. tests/eval/test_vllm_engine.py
checks the adapter against a stand-in module with that interface; the real vLLM is not installed
where the tests run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import tempfile
import traceback

from ..settings import ConfigError

INSTALL = "pip install 'megatron_redi[vllm]' on a machine with CUDA GPUs"


def import_vllm():
    try:
        import vllm
    except ImportError:
        raise ConfigError(f"--engine vllm: vLLM is not installed ({INSTALL}); the built-in engine needs nothing "
                          "more (--engine builtin)") from None
    return vllm


@contextlib.contextmanager
def hf_checkpoint(checkpoint: str):
    """An HF directory of ``checkpoint``: itself, or its bf16 export in a temporary directory."""
    from ..checkpoint.native import NativeCheckpointReader, copy_side_files, is_native, write_hf

    if not is_native(checkpoint):
        yield checkpoint
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="megatron_redi_vllm_") as tmp:
        reader = NativeCheckpointReader(checkpoint)
        copy_side_files(checkpoint, tmp)
        write_hf(reader, reader.cfg, tmp, torch.bfloat16, 5 * 10**9, progress=False)
        yield tmp


def replica_devices(tp: int) -> list[list[str]]:
    """The GPU groups of the replicas: the visible GPUs, ``tp`` per replica ([[]]: one replica, on
    whatever vLLM finds)."""
    import torch

    count = torch.cuda.device_count()  # what CUDA_VISIBLE_DEVICES leaves visible (up to its first bad entry)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()][:count] if visible else [str(i) for i in range(count)]
    if len(ids) < 2 * tp:
        return [[]]
    return [ids[i:i + tp] for i in range(0, len(ids) - tp + 1, tp)]


def _generate(job: dict) -> tuple[list[list[str]], list[list[int]]]:
    """One replica's share, in the replica's own process (on its GPUs)."""
    if job["devices"]:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(job["devices"])
    vllm = import_vllm()
    p = job["protocol"]
    llm = vllm.LLM(model=job["model"], tokenizer=job["tokenizer"], tensor_parallel_size=job["tp"], dtype=job["dtype"],
                   seed=job["seed"], max_model_len=job["max_model_len"])
    params = [vllm.SamplingParams(n=p["samples"], temperature=p["temperature"], top_p=p["top_p"],
                                  max_tokens=p["max_new_tokens"], seed=job["seed"] * 1_000_003 + index)
              for index in job["indices"]]
    outputs = llm.generate(job["prompts"], params)
    if len(outputs) != len(job["prompts"]) or any(len(o.outputs) != p["samples"] for o in outputs):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(job['prompts'])} prompts, or not "
                           f"{p['samples']} samples each")
    return ([[c.text for c in o.outputs] for o in outputs], [[len(c.token_ids) for c in o.outputs] for o in outputs])


def _replica(index: int, job: dict, results) -> None:
    """A replica's process: its share's generations, or the traceback of what stopped it."""
    try:
        results.put((index, _generate(job), None))
    except BaseException:
        results.put((index, None, traceback.format_exc()))


def _run_replicas(jobs: list[dict]) -> list:
    """Every job in its own spawned, non-daemonic process (GPUs chosen before vLLM starts CUDA
    there); their results in the jobs' order."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    procs = [context.Process(target=_replica, args=(i, job, results), daemon=False) for i, job in enumerate(jobs)]
    for proc in procs:
        proc.start()
    parts, waited_on_exit = {}, False
    try:
        while len(parts) < len(jobs):  # read before joining: a large result fills the pipe
            try:
                index, part, error = results.get(timeout=1)
            except queue.Empty:
                gone = [i for i, proc in enumerate(procs) if i not in parts and proc.exitcode is not None]
                if gone and waited_on_exit:  # what it sent before it ended has had its time to arrive
                    raise RuntimeError(f"vLLM replica {gone[0]} (GPUs {','.join(jobs[gone[0]]['devices']) or 'any'}) ended "
                                       f"with exit code {procs[gone[0]].exitcode} and no result") from None
                waited_on_exit = bool(gone)
                continue
            if error:
                raise RuntimeError(f"vLLM replica {index} (GPUs {','.join(jobs[index]['devices']) or 'any'}) failed:\n{error}")
            parts[index] = part
    finally:
        for proc in procs:
            if proc.is_alive() and len(parts) < len(jobs):
                proc.terminate()
            proc.join()
    return [parts[i] for i in range(len(jobs))]


def generate_texts(checkpoint: str, tokenizer: str, prompts: list[str], protocol, seed: int, tp: int = 1,
                   dtype: str = "bfloat16", max_model_len: int | None = None,
                   devices: list[list[str]] | None = None) -> tuple[list[list[str]], list[list[int]]]:
    """(texts[i][j], lengths[i][j]): ``protocol.samples`` generations of each prompt by vLLM."""
    import_vllm()  # before an export that would be for nothing
    devices = replica_devices(tp) if devices is None else devices
    settings = {"samples": protocol.samples, "max_new_tokens": protocol.max_new_tokens,
                "temperature": 0.0 if protocol.greedy else protocol.temperature,
                "top_p": 1.0 if protocol.greedy else protocol.top_p}
    with hf_checkpoint(checkpoint) as model:
        jobs = [{"model": model, "tokenizer": tokenizer, "tp": tp, "dtype": dtype, "seed": seed,
                 "max_model_len": max_model_len, "protocol": settings, "devices": group,
                 "indices": list(range(r, len(prompts), len(devices))),
                 "prompts": prompts[r::len(devices)]} for r, group in enumerate(devices)]
        parts = _run_replicas(jobs)
    texts, lengths = [None] * len(prompts), [None] * len(prompts)
    for job, (t, n) in zip(jobs, parts):
        for index, text, length in zip(job["indices"], t, n):
            texts[index], lengths[index] = text, length
    return texts, lengths
