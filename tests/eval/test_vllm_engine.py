"""tools/evaluate.py --engine vllm, run as a user runs it, against a stand-in module with vLLM's documented offline interface
(LLM, SamplingParams, generate's outputs) that records what it receives and answers known texts:
the prompts are the built-in engine's byte for byte, the protocol's sampling reaches vLLM, a native
checkpoint is exported and the export removed, replicas share the problems, and the scoring is the
built-in engine's."""

import json
import os
import subprocess
import sys

import pytest

from megatron_redi.eval import prompt_text, vllm_engine
from megatron_redi.eval.protocol import named

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def evaluate(argv, vllm_dir):
    """tools/evaluate.py as a user runs it, with ``vllm_dir`` (a directory holding a ``vllm``
    package) first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(vllm_dir), ROOT))}
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), *map(str, argv)], env=env,
                          capture_output=True, text=True)

STAND_IN = '''
import json, multiprocessing, os, re

LOG = os.environ["FAKE_VLLM_LOG"]


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=None):
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = n, temperature, top_p, max_tokens, seed


class _Sample:
    def __init__(self, text):
        self.text, self.token_ids = text, list(range(len(text.split())))


class _Output:
    def __init__(self, samples):
        self.outputs = samples


class LLM:
    def __init__(self, model, tokenizer=None, tensor_parallel_size=1, dtype="auto", seed=0, max_model_len=None):
        if os.environ.get("FAKE_VLLM_EXIT"):
            os._exit(int(os.environ["FAKE_VLLM_EXIT"]))
        if os.environ.get("FAKE_VLLM_FAIL"):
            raise ValueError(os.environ["FAKE_VLLM_FAIL"])
        engine = multiprocessing.get_context("fork").Process(target=os.getpid, daemon=True)
        engine.start()  # as vLLM starts its engine: refused in a daemonic process
        engine.join()
        self.record = {"pid": os.getpid(), "model": model, "model_files": sorted(os.listdir(model)), "tokenizer": tokenizer,
                       "tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed,
                       "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def generate(self, prompts, params):
        assert len(params) == len(prompts)
        outputs = []
        for prompt, p in zip(prompts, params):
            a = int(re.search(r"What is (\\d+) \\+", prompt).group(1))
            # sample 0 right, the others wrong: pass@1 = 1 / n
            outputs.append(_Output([_Sample(f"<think>adding</think> so \\\\boxed{{{2 * a + (j > 0)}}}")
                                    for j in range(p.n)]))
        self.record.update(prompts=prompts, params=[vars(p) for p in params])
        with open(LOG, "a") as f:
            f.write(json.dumps(self.record) + "\\n")
        return outputs
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """The stand-in's directory (on this process's path too); ``fake_vllm.calls()``: what it received."""
    (tmp_path / "fake" / "vllm").mkdir(parents=True)
    (tmp_path / "fake" / "vllm" / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)

    class Fake:
        path = tmp_path / "fake"

        @staticmethod
        def calls():
            return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return Fake


def _benchmark(path, n=5):
    path.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(n)))
    return path


def test_evaluate_with_vllm_scores_as_the_builtin_engine(fake_vllm, tiny_run, tiny_run_inputs, tmp_path):
    from transformers import AutoTokenizer

    data, _ = tiny_run_inputs
    tokenizer = os.path.join(data, "tokenizer")
    checkpoint = tiny_run / "checkpoints" / "step_00000003"  # native: exported for vLLM, then removed
    bench, out = _benchmark(tmp_path / "b.jsonl"), tmp_path / "eval"
    done = evaluate(["--checkpoint", checkpoint, "--benchmark", bench, "--tokenizer", tokenizer, "--output", out,
                     "--engine", "vllm", "--samples", "4", "--max-new-tokens", "64", "--no-progress"], fake_vllm.path)
    assert done.returncode == 0, done.stderr[-2000:]
    (call,) = fake_vllm.calls()
    assert "config.json" in call["model_files"] and not os.path.exists(call["model"])  # an HF export, gone now
    assert call["tokenizer"] == tokenizer and call["tensor_parallel_size"] == 1 and call["seed"] == 0
    protocol = named("final", samples=4, max_new_tokens=64)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    assert call["prompts"] == [prompt_text(tok, f"What is {i} + {i}?", "lighteval", True) for i in range(5)]
    assert all((p["n"], p["temperature"], p["top_p"], p["max_tokens"]) == (4, 0.6, 0.95, 64) for p in call["params"])
    assert len({p["seed"] for p in call["params"]}) == 5  # a seed per problem
    summary = json.loads((out / "step_00000003" / "b.json").read_text())
    assert summary["pass@1"] == 0.25 and summary["pass@4"] == 1.0 and summary["protocol"] == {
        **protocol.record(), "name": "custom"}
    rows = [json.loads(line) for line in (out / "step_00000003" / "b.jsonl").read_text().splitlines()]
    assert rows[3]["correct"] == [True, False, False, False] and rows[3]["lengths"] == [3] * 4  # token counts as vLLM gave them


def test_replicas_share_the_problems_and_results_keep_their_order(fake_vllm, tiny_checkpoint, tmp_path):
    prompts = [f"What is {i} + {i}?" for i in range(7)]
    protocol = named("final", samples=2, max_new_tokens=8)
    one = vllm_engine.generate_texts(tiny_checkpoint(), "tok", prompts, protocol, seed=3, devices=[[]])
    two = vllm_engine.generate_texts(tiny_checkpoint(), "tok", prompts, protocol, seed=3, devices=[["0"], ["1"]])
    assert one == two and one[0][5] == ["<think>adding</think> so \\boxed{10}", "<think>adding</think> so \\boxed{11}"]
    calls = fake_vllm.calls()
    assert sorted(c["visible"] or "" for c in calls[1:]) == ["0", "1"]  # one process per GPU group
    assert sorted(s for c in calls[1:] for s in (p["seed"] for p in c["params"])) == \
        [p["seed"] for p in calls[0]["params"]]  # each problem's seed whatever the replica


def test_each_checkpoint_and_replica_builds_its_llm_in_a_process_of_its_own(fake_vllm, tiny_checkpoint):
    """Not in the evaluating process (whose GPU memory an LLM would keep) and not in a daemonic
    worker (where vLLM cannot start its engine's process: the stand-in starts one too)."""
    protocol, path = named("final", samples=1, max_new_tokens=8), tiny_checkpoint()
    for devices in ([[]], [[]], [["0"], ["1"], ["2"]]):
        vllm_engine.generate_texts(path, "tok", ["What is 1 + 1?"] * 3, protocol, seed=0, devices=devices)
    pids = [c["pid"] for c in fake_vllm.calls()]
    assert len(pids) == 5 and len(set(pids)) == 5 and os.getpid() not in pids


@pytest.mark.parametrize("env,message", [({"FAKE_VLLM_FAIL": "CUDA out of memory (stand-in)"},
                                          r"vLLM replica \d \(GPUs \d\) failed:(.|\n)*CUDA out of memory \(stand-in\)"),
                                         ({"FAKE_VLLM_EXIT": "3"}, r"vLLM replica \d \(GPUs \d\) ended with exit code 3")])
def test_a_replica_that_fails_or_dies_fails_the_evaluation_with_its_reason(fake_vllm, tiny_checkpoint, monkeypatch,
                                                                           env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError, match=message):
        vllm_engine.generate_texts(tiny_checkpoint(), "tok", ["What is 1 + 1?"] * 2, named("final", samples=1),
                                   seed=0, devices=[["0"], ["1"]])


def test_replicas_are_the_visible_gpus_as_cuda_counts_them(monkeypatch):
    """CUDA stops at the first entry of CUDA_VISIBLE_DEVICES it cannot use: count what it sees."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7,9")  # two of these exist on this node
    assert vllm_engine.replica_devices(1) == [["3"], ["5"]]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert vllm_engine.replica_devices(1) == [["0"], ["1"]] and vllm_engine.replica_devices(2) == [[]]


def test_without_vllm_the_engine_is_refused_with_how_to_install(tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    (tmp_path / "none" / "vllm").mkdir(parents=True)
    (tmp_path / "none" / "vllm" / "__init__.py").write_text("raise ImportError('no module named vllm')\n")
    done = evaluate(["--checkpoint", tiny_checkpoint(), "--benchmark", _benchmark(tmp_path / "b.jsonl"),
                     "--tokenizer", tiny_tokenizer_dir, "--output", tmp_path / "out", "--engine", "vllm"],
                    tmp_path / "none")
    err = done.stderr
    assert done.returncode == 2 and "vLLM is not installed" in err and "megatron_redi[vllm]" in err
    assert not (tmp_path / "out").exists()
