"""One whole training step of each family against an independent one: transformers' model, the
losses written out here from the paper's formulas, torch's autograd, clip_grad_norm_ and AdamW.

The library's side is what the trainer runs (packing into several micro-batches, the fused
log-prob head, the fp32 gradient buffer, the flat AdamW); the other side shares none of it. Compared:
the loss, every gradient (in HF layout), and every weight after the AdamW step (fp32, CPU)."""

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from multirank import assert_grads_close, merged_grads

from megatron_redi.data import TrainingItem, pack
from megatron_redi.data.dataset import Sequence
from megatron_redi.losses import LossConfig
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import ParallelState
from megatron_redi.training.optimizer import MasterParams
from megatron_redi.training.step import forward_backward, optimizer_step

PAIRS = [(4, 9, 13), (2, 1, 3), (6, 17, 5), (3, 11, 2)]  # (prompt, chosen, rejected) token counts
REF = [(-30.0 - i, -41.5 + i) for i in range(len(PAIRS))]  # DPO's reference log-prob sums
ALPHA, BETA = 0.8, 0.1
# each loss as the step runs it; SimPO both ways the paper's reference may have run it (Eq. 3, and
# TRL's CPOTrainer default adding the chosen response's NLL)
CASES = {"redi": dict(type="redi", alpha=ALPHA), "dpo": dict(type="dpo", beta=BETA), "sft": dict(type="sft"),
         "simpo": dict(type="simpo", beta=2.0, gamma=1.0), "simpo_nll": dict(type="simpo", beta=2.0, gamma=1.0,
                                                                          nll_weight=1.0)}
# lr large enough that a wrong gradient moves a weight visibly; eps 1e-3 because Qwen2's key biases
# get a gradient that is zero up to rounding (softmax ignores a shift of all scores), which a tiny
# eps would turn into full-size steps of noise on both sides
OPTIM = types.SimpleNamespace(betas=(0.9, 0.95), eps=1e-3, weight_decay=0.1, clip_grad=1.0)
LR = 1e-2


def _sequences(vocab):
    rng = np.random.default_rng(0)
    return [[Sequence(rng.integers(1, vocab, prompt + n), prompt) for n in (chosen, rejected)]
            for prompt, chosen, rejected in PAIRS]


def _library_step(path, case, pairs):
    loss_type = CASES[case]["type"]
    model = from_pretrained(path)
    master = MasterParams(model, ParallelState())
    if loss_type == "sft":  # each sequence an item; the loss a mean over the batch's response tokens
        units = [TrainingItem(i, (s,)) for i, s in enumerate(s for pair in pairs for s in pair)]
        total = sum(s.response_len for pair in pairs for s in pair)
    else:
        units = [TrainingItem(i, tuple(pair), REF[i] if loss_type == "dpo" else None) for i, pair in enumerate(pairs)]
        total = len(pairs)
    loss = LossConfig(**CASES[case])
    batches = pack(units, 40, 1, 0)
    assert len(batches) > 1  # the step sums micro-batches
    work = forward_backward(model, master, batches, loss, float(total))
    for _, p in master.grads.named_params():
        p.grad = p.main_grad.clone()
    grads = merged_grads(model, lambda g: [g])
    optimizer_step(master, master.grads.norm().item(), LR, OPTIM)
    for p in model.parameters():
        p.grad = p.detach().clone()  # the weights after the step, in HF layout through the same merge
    return work.loss, grads, merged_grads(model, lambda w: [w])


def _independent_step(path, case, pairs):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in hf.named_parameters()}

    def logp(seq):  # the response tokens' log-prob sum, and their count
        tokens = torch.as_tensor(seq.tokens)
        logits = hf(tokens[None]).logits[0, seq.prompt_len - 1:-1]
        return logits.log_softmax(-1).gather(1, tokens[seq.prompt_len:, None]).sum(), seq.response_len

    c = CASES[case]
    if c["type"] == "sft":
        logps = [logp(s) for pair in pairs for s in pair]
        loss = -sum(lp for lp, _ in logps) / sum(n for _, n in logps)
    else:
        terms = []
        for (chosen, rejected), (ref_c, ref_r) in zip(pairs, REF):
            (lc, nc), (lr, nr) = logp(chosen), logp(rejected)
            if c["type"] == "redi":
                terms.append(-lc / nc + ALPHA * lr / nr)
            elif c["type"] == "simpo":  # Eq. 3, plus TRL's NLL of the chosen response when weighted
                terms.append(-F.logsigmoid(c["beta"] * (lc / nc - lr / nr) - c["gamma"])
                             - c.get("nll_weight", 0.0) * lc / nc)
            else:
                terms.append(-F.logsigmoid(BETA * ((lc - ref_c) - (lr - ref_r))))
        loss = sum(terms) / len(terms)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in hf.named_parameters()}
    torch.nn.utils.clip_grad_norm_(hf.parameters(), OPTIM.clip_grad)
    decay = [p for p in hf.parameters() if p.dim() >= 2]
    rest = [p for p in hf.parameters() if p.dim() < 2]
    torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                      lr=LR, betas=OPTIM.betas, eps=OPTIM.eps).step()
    after = {name: p.detach() for name, p in hf.named_parameters()}
    assert all((after[n] - before[n]).abs().max() > LR / 2 for n in after if "embed" not in n)  # a real step
    return loss.detach(), grads, after


@pytest.mark.parametrize("arch,case", [(arch, case) for arch in ("qwen2", "llama3", "qwen3")
                                       for case in ("redi", "dpo", "sft")] + [("qwen2", "simpo"), ("qwen2", "simpo_nll")])
def test_one_step_equals_transformers_and_torch(tiny_checkpoint, arch, case):
    path = tiny_checkpoint(arch=arch, tie_word_embeddings=False, num_kv_heads=2)
    pairs = _sequences(384)
    loss, grads, weights = _library_step(path, case, pairs)
    want_loss, want_grads, want_weights = _independent_step(path, case, pairs)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(grads, want_grads)
    assert_grads_close(weights, want_weights, tol=2e-5)
