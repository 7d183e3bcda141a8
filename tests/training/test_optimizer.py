"""MasterParams: the AdamW step against torch.optim.AdamW, and the weight gradients that
parallel/linear.py (through ops/wgrad.py) accumulates straight into main_grad against plain autograd."""

import copy

import pytest
import torch

from megatron_redi.model_config import preset
from megatron_redi.model import Decoder
from megatron_redi.parallel import ParallelState
from megatron_redi.training.optimizer import MasterParams, no_weight_decay


def tiny_model(recompute="selective"):
    torch.manual_seed(0)
    return Decoder(preset("tiny", vocab_size=300), ParallelState(), recompute=recompute)


def forward_backward(model):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (20,), generator=g)
    pos = torch.cat([torch.arange(12), torch.arange(8)])
    hidden = model(ids, pos, [0, 12, 20])
    (hidden.square().mean() + hidden[:, 0].sum()).backward()


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_weight_gradients_land_in_main_grad(recompute):
    plain, fused = tiny_model(recompute), tiny_model(recompute)
    master = MasterParams(fused, ParallelState())
    master.grads.zero_grad()  # a step opens the fp32 gradients to the layers' writes
    forward_backward(plain)
    for _ in range(2):  # accumulates over micro-batches
        forward_backward(fused)
    for name, p in fused.named_parameters():
        want = 2 * dict(plain.named_parameters())[name].grad
        torch.testing.assert_close(p.main_grad, want, rtol=1e-5, atol=1e-6, msg=name)
        assert p.grad is None, name
    master.grads.zero_grad()
    assert all(not p.main_grad.any() for p in fused.parameters())


def test_adamw_step_with_clipping_matches_torch_adamw_and_reports_the_update_norm():
    model = tiny_model()
    reference = copy.deepcopy(model)
    master = MasterParams(model, ParallelState())
    decay = [p for n, p in reference.named_parameters() if not no_weight_decay(n, p)]
    rest = [p for n, p in reference.named_parameters() if no_weight_decay(n, p)]
    # eps 1e-3: the key biases' gradient is zero up to rounding (softmax ignores a shift of every
    # score), and with a tiny eps Adam would amplify that rounding noise into 1e-2 steps
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.95), eps=1e-3)
    for step in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        master.grads.zero_grad()
        forward_backward(model)
        opt.zero_grad()
        forward_backward(reference)
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        sq = master.adamw_step(1e-2, (0.9, 0.95), 1e-3, 0.1, grad_scale=min(1.0, 0.5 / (master.grads.norm().item() + 1e-6)))
        opt.step()
        moved = sum((p.detach() - b).square().sum() for p, b in zip(model.parameters(), before))
        torch.testing.assert_close(master.update_norm(sq), moved.sqrt(), rtol=1e-4, atol=0)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # the parameters are views of the flat buffer that the step writes
    flat = {buffer.data_ptr() for buffer in master.model}
    assert all(p.untyped_storage().data_ptr() in flat for p in model.parameters())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_master_weight_is_found(bad):
    master = MasterParams(tiny_model(), ParallelState())
    assert master.all_finite()
    for buffer in master.master:
        before = buffer[len(buffer) // 2].item()
        buffer[len(buffer) // 2] = bad
        assert not master.all_finite()
        buffer[len(buffer) // 2] = before
    assert master.all_finite()
