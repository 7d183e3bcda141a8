"""The GPU fast path end to end against the fp32 CPU model: bf16 weights, the Triton norms, SwiGLU
and RoPE, the extension's (else Triton's) log-prob head, and the weight gradients accumulated
straight into the fp32 main_grad, in every recompute mode. bf16 tolerances."""

import numpy as np
import pytest
import torch

from megatron_redi.model_config import preset
from megatron_redi.data.dataset import Sequence
from megatron_redi.data.packing import TrainingItem, build_micro_batch
from megatron_redi.losses import LossConfig, microbatch_loss, sequence_coefficients
from megatron_redi.model import Decoder
from megatron_redi.parallel.logprob_head import head_logprobs
from megatron_redi.parallel import ParallelState
from megatron_redi.training.optimizer import MasterParams


def redi_step(model, mb):
    cfg = LossConfig(type="redi")
    hidden = model(mb.input_ids, mb.position_ids, mb.seqs)
    coeff = sequence_coefficients(cfg, mb.response_lengths, mb.pairs, 1.0)
    logp, count = head_logprobs(model, hidden, mb.loss_index, mb.targets, mb.seq_index, mb.num_seqs, coeff)
    microbatch_loss(cfg, logp, count, mb.pairs, 1.0)[0].backward()
    return logp.detach().cpu()


def relative_error(got, want):
    return ((got.float().cpu() - want).norm() / want.norm()).item()


def compare_with_fp32_cpu(device, dtype, recompute, tol, family="qwen2"):
    cfg = preset("tiny", vocab_size=1000, hidden_size=256, intermediate_size=640)  # head dim 64
    if family == "qwen3":  # q/k norms in the fused split, heads of 48 (3 x 4 x 48 = 576 QKV rows)
        cfg = preset("tiny", vocab_size=1000, hidden_size=256, intermediate_size=640, head_dim=48,
                     architectures=["Qwen3ForCausalLM"], model_type="qwen3")
    torch.manual_seed(0)
    reference = Decoder(cfg, ParallelState(), recompute="none")
    model = Decoder(cfg, ParallelState(device=torch.device(device)), dtype=dtype, recompute=recompute)
    model.load_state_dict(reference.state_dict())
    MasterParams(model, model.parallel).grads.zero_grad()  # a step: the fp32 gradients open to writes
    rng = np.random.default_rng(0)
    mb = build_micro_batch([TrainingItem(0, tuple(Sequence(rng.integers(0, 1000, n), 8) for n in (70, 45)))])
    want, got = redi_step(reference, mb), redi_step(model, mb.to(device))
    assert relative_error(got, want) < tol
    grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is None, name
        if p.dim() == 2:  # the biases of the keys have a gradient of zero up to rounding
            assert relative_error(p.main_grad, grads[name].grad) < 5 * tol, name
    every = torch.cat([p.main_grad.float().cpu().reshape(-1) for p in model.parameters()])
    assert relative_error(every, torch.cat([grads[n].grad.reshape(-1) for n, _ in model.named_parameters()])) < 5 * tol


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_the_comparison_itself_on_cpu(family):
    compare_with_fp32_cpu("cpu", torch.float32, "selective", 1e-5, family)


@pytest.mark.cuda
@pytest.mark.parametrize("recompute", ["none", "selective", "full", "auto"])
@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_fast_path_matches_the_fp32_cpu_model(recompute, family):
    compare_with_fp32_cpu("cuda", torch.bfloat16, recompute, 1e-2, family)
