"""The optimizer over flat shards on its own, fed flat gradients directly (no gradient buffer, no
model hooks): AdamW as torch's, the parameters as views that follow the master weights, the update
norm with TP-replicated regions counted once, and its state's round trip."""

import pytest
import torch

from megatron_redi.parallel import ParallelState
from megatron_redi.training.grad_buffer import flat_layouts
from megatron_redi.training.optimizer import FlatAdamW

SETTINGS = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def _module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3, bias=False))


def _optimizer(module, replicated=()):
    return FlatAdamW(flat_layouts(module, 1), ParallelState(), zero1=False, device=torch.device("cpu"),
                     replicated=list(replicated))


def _gradients(opt, step):
    g = torch.Generator().manual_seed(step)
    return [torch.randn(lay.numel, generator=g) for lay in opt.layouts]


def test_three_steps_equal_torch_adamw_with_the_same_groups():
    module, reference = _module(), _module()
    opt = _optimizer(module)
    decay = [p for n, p in reference.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in reference.named_parameters() if p.dim() < 2]
    torch_opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=SETTINGS["lr"],
                                  betas=SETTINGS["betas"], eps=SETTINGS["eps"], weight_decay=SETTINGS["weight_decay"])
    ref_params = dict(reference.named_parameters())
    for step in range(3):
        grads = _gradients(opt, step)
        for lay, grad in zip(opt.layouts, grads):
            for name, _ in lay.params:
                ref_params[name].grad = lay.view(grad, name).clone()
        torch_opt.step()
        opt.step(grads, **SETTINGS)
    for name, p in module.named_parameters():  # the model's own parameters moved, as views of the flat copy
        torch.testing.assert_close(p.detach(), ref_params[name].detach(), rtol=1e-6, atol=1e-7, msg=name)
        torch.testing.assert_close(opt.master_tensors()[name], ref_params[name].detach(), rtol=1e-6, atol=1e-7)


def test_the_update_norm_is_exact_and_counts_a_replicated_region_once():
    module = _module()
    weight = "2.weight"
    lay = next(i for i, lay in enumerate(_optimizer(_module()).layouts) if weight in lay.ranges)
    plain, shared = _optimizer(module), _optimizer(_module(), replicated=[(lay, weight, slice(0, 2), 4)])
    before = {n: t.clone() for n, t in plain.master_tensors().items()}
    grads = _gradients(plain, 0)
    sq = plain.update_norm(plain.step(grads, **SETTINGS))
    moved = {n: t - before[n] for n, t in plain.master_tensors().items()}
    assert torch.allclose(sq, torch.sqrt(sum(d.square().sum() for d in moved.values())), rtol=1e-6)
    sq_shared = shared.update_norm(shared.step(grads, **SETTINGS))
    region = moved[weight][0:2].square().sum()
    # 4 TP ranks hold rows 0-1: each counts a quarter, so that the TP all-reduce counts them once
    assert torch.allclose(sq_shared.square(), sq.square() - 0.75 * region, rtol=1e-5)


def test_its_state_round_trips_and_a_wrong_shape_is_named():
    module = _module()
    opt = _optimizer(module)
    for step in range(2):
        opt.step(_gradients(opt, step), **SETTINGS)
    other = _optimizer(_module())
    other.load_master({n: t.clone() for n, t in opt.master_tensors().items()})
    other.load_state_tensors({k: t.clone() for k, t in opt.state_tensors().items()}, opt.step_count)
    grads = _gradients(opt, 7)
    opt.step(grads, **SETTINGS)
    other.step([g.clone() for g in grads], **SETTINGS)
    for a, b in zip(opt.master, other.master):
        assert torch.equal(a, b)
    state = opt.state_tensors()
    state["exp_avg.1"] = state["exp_avg.1"][:-1]
    with pytest.raises(ValueError, match=r"optimizer state exp_avg\.1: expected shape"):
        other.load_state_tensors(state, 3)


def test_parameters_of_mixed_dtypes_are_refused():
    module = _module()
    module[2].weight.data = module[2].weight.data.double()
    with pytest.raises(ValueError, match="must share a dtype"):
        _optimizer(module)
