"""The fp32 gradient of a trained parameter: one contract between its owner and the layers that write it.

Under the trainer every trainable parameter has an fp32 gradient, a view into a flat buffer that
training/grad_buffer.py owns and all-reduces over the data-parallel ranks. Some layers write their
weight gradients into it themselves rather than through ``param.grad``: the linear layers' weight-
gradient GEMM (ops/wgrad.py), the embedding's row scatter (parallel/linear.py) and the fused LM
head, whose single-pass mode writes during the forward (parallel/logprob_head.py). Those writers
and the owner meet here, nowhere else:

    attach(param, buffer)    the owner gives ``param`` its fp32 gradient (closed to writes)
    of(param)                that gradient, or None (no trainer: tests, inference, generation)
    set_open(param, flag)    the owner opens a step's window (from zeroing the gradients to their
                             reduction) and closes it
    write(param, replaces_grad)
                             a layer's way in: the gradient to accumulate into; outside the window
                             it raises, since such a write would be lost or counted into another
                             step (an unplanned single-pass head call, a backward after the
                             reduction). ``replaces_grad``: the layer's autograd returns a
                             placeholder for ``param.grad``, which the hook must drop
    take_delivered(param)    the owner's post-accumulate hook: whether a layer already added this
                             micro-batch's gradient (then ``param.grad`` is a placeholder to drop)

The state lives in attributes of the parameter, named by the constants below.
"""

from __future__ import annotations

import torch

MAIN_GRAD = "main_grad"  # the fp32 gradient (the name Megatron-LM uses, which its users know)
DELIVERED = "grad_in_main_grad"  # a layer accumulated this micro-batch's gradient into it
OPEN = "main_grad_open"  # a training step is accumulating


class GradientContractError(RuntimeError):
    """A layer wrote a parameter's fp32 gradient outside the step that accumulates it."""


def attach(param: torch.Tensor, buffer: torch.Tensor, open_: bool = False) -> None:
    setattr(param, MAIN_GRAD, buffer)
    setattr(param, DELIVERED, False)
    setattr(param, OPEN, open_)


def of(param: torch.Tensor) -> torch.Tensor | None:
    return getattr(param, MAIN_GRAD, None)


def set_open(param: torch.Tensor, flag: bool) -> None:
    setattr(param, OPEN, flag)


def write(param: torch.Tensor, replaces_grad: bool = False) -> torch.Tensor:
    if not getattr(param, OPEN, False):
        raise GradientContractError(f"a layer wrote the fp32 gradient of a parameter of shape {tuple(param.shape)} "
                                    "outside a training step (before the gradients were zeroed or after their "
                                    "reduction): it would be lost or added to another step's")
    if replaces_grad:
        setattr(param, DELIVERED, True)
    return getattr(param, MAIN_GRAD)


def take_delivered(param: torch.Tensor) -> bool:
    delivered = getattr(param, DELIVERED, False)
    setattr(param, DELIVERED, False)
    return delivered
