"""The gradient buffer on its own: the flat fp32 gradients, the step's window that the gradient
contract (megatron_redi/main_grad.py) enforces, and the norm."""

import pytest
import torch

from megatron_redi import main_grad
from megatron_redi.model_config import preset
from megatron_redi.model import Decoder
from megatron_redi.parallel import ParallelState
from megatron_redi.training.grad_buffer import GradBuffer, flat_layouts, no_weight_decay


def _backward(model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (20,), generator=g)
    model(ids, torch.cat([torch.arange(12), torch.arange(8)]), [0, 12, 20]).square().mean().backward()


def _model():
    torch.manual_seed(0)
    return Decoder(preset("tiny", vocab_size=300), ParallelState(), recompute="selective")


def test_layouts_split_by_weight_decay_and_pad_for_the_replicas():
    model = _model()
    decay, rest = flat_layouts(model, replicas=3)
    assert decay.decay and not rest.decay
    assert all(not no_weight_decay(n, p) for n, p in decay.params) and all(no_weight_decay(n, p) for n, p in rest.params)
    assert {n for n, _ in decay.params} | {n for n, _ in rest.params} == {n for n, _ in model.named_parameters()}
    assert decay.numel % 3 == 0 and rest.numel % 3 == 0


def test_gradients_accumulate_in_fp32_inside_the_step_window_only():
    plain, model = _model(), _model()
    buffer = GradBuffer(model, flat_layouts(model, 1), ParallelState(), torch.device("cpu"))
    with pytest.raises(main_grad.GradientContractError, match="outside a training step"):
        _backward(model)  # the window opens at zero_grad: a layer's write before it is refused
    buffer.zero_grad()
    _backward(model)
    _backward(plain)
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert p.grad is None, name
        torch.testing.assert_close(main_grad.of(p), q.grad, rtol=1e-5, atol=1e-6, msg=name)
    every = torch.cat([q.grad.reshape(-1) for q in plain.parameters()])
    torch.testing.assert_close(buffer.norm(), every.norm(), rtol=1e-5, atol=0)
    buffer.finish_reduction()  # one rank: nothing to reduce; the window closes
    with pytest.raises(main_grad.GradientContractError):
        _backward(model)
