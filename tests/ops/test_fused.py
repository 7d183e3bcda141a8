"""The memory-lean Functions against their plain-autograd references: values, gradients, memory."""

import pytest
import torch

from megatron_redi.ops.rms_norm import rms_norm, rms_norm_reference
from megatron_redi.ops.swiglu import swiglu_linear, swiglu_linear_reference


def _grads(fn, *inputs, upstream):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    outs, ups = (out, upstream) if isinstance(out, tuple) else ((out,), (upstream,))
    torch.autograd.backward(outs, ups)
    return [o.detach() for o in outs], [x.grad for x in leaves]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("add", [False, True], ids=["norm", "add+norm"])
def test_rms_norm_matches_reference(dtype, tol, add):
    g = torch.Generator().manual_seed(0)
    x, delta = (torch.randn(37, 48, generator=g).to(dtype) for _ in range(2))
    w = (1 + 0.1 * torch.randn(48, generator=g)).to(dtype)
    dh, dy = (torch.randn(37, 48, generator=g).to(dtype) for _ in range(2))
    inputs, up = ((x, w, delta), (dh, dy)) if add else ((x, w), (dy,))
    a, ga = _grads(lambda x, w, *d: rms_norm(x, w, 1e-6, *d)[-len(up):], *inputs, upstream=up)
    b, gb = _grads(lambda x, w, *d: rms_norm_reference(x, w, 1e-6, *d)[-len(up):], *inputs, upstream=up)
    for u, v in zip(a, b):
        assert torch.equal(u, v)  # the forward is the same expression
    for u, v in zip(ga, gb):
        assert u.dtype == v.dtype
        torch.testing.assert_close(u.float(), v.float(), rtol=tol, atol=tol)
    if add:  # the stream and the branch receive the same gradient
        assert torch.equal(ga[0], ga[2])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_swiglu_linear_matches_reference(dtype, tol):
    g = torch.Generator().manual_seed(1)
    gate_up = torch.randn(29, 2 * 40, generator=g).to(dtype)
    w = (0.2 * torch.randn(24, 40, generator=g)).to(dtype)
    dy = torch.randn(29, 24, generator=g).to(dtype)
    a, ga = _grads(swiglu_linear, gate_up, w, upstream=dy)
    b, gb = _grads(swiglu_linear_reference, gate_up, w, upstream=dy)
    torch.testing.assert_close(a[0].float(), b[0].float(), rtol=tol, atol=tol)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u.float(), v.float(), rtol=tol, atol=tol)


def _saved_bytes(fn, *inputs):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return total


def test_lean_functions_save_less_for_backward():
    t, h, f = 64, 32, 96
    x, w = torch.randn(t, h).bfloat16(), torch.ones(h).bfloat16()
    gate_up, wd = torch.randn(t, 2 * f).bfloat16(), torch.randn(h, f).bfloat16()
    lean_norm, plain_norm = _saved_bytes(lambda a, b: rms_norm(a, b, 1e-6, a), x, w), _saved_bytes(
        lambda a, b: rms_norm_reference(a, b, 1e-6, a), x, w)
    lean_mlp, plain_mlp = _saved_bytes(swiglu_linear, gate_up, wd), _saved_bytes(swiglu_linear_reference, gate_up, wd)
    assert lean_norm <= t * h * 2 + t * 4 + h * 2  # h = x + delta (bf16), rstd (fp32), the weight
    assert plain_norm >= 2 * lean_norm
    assert lean_mlp == t * 2 * f * 2 + h * f * 2  # gate_up and the weight only
    assert plain_mlp - lean_mlp >= 2 * t * f * 2  # silu(gate) and the product are not kept


@pytest.mark.parametrize("m,n", [(5, 12), (1, 9), (16, 17), (7, 7)])
def test_chunk_attention_equals_the_bottom_right_masked_reference(m, n):
    """Context parallelism's attention of a chunk's m queries over its sequence's first n keys, in
    two unmasked parts merged by log-sum-exp, against SDPA with the materialised mask: output and
    every gradient."""
    from megatron_redi.ops.chunk_attention import chunk_attention, chunk_attention_reference

    g = torch.Generator().manual_seed(m * n)
    q, k, v = (torch.randn(1, heads, length, 16, generator=g, dtype=torch.float64, requires_grad=True)
               for heads, length in ((4, m), (2, n), (2, n)))
    grad = torch.randn(1, 4, m, 16, generator=g, dtype=torch.float64)
    got_grads = torch.autograd.grad(got := chunk_attention(q, k, v), (q, k, v), grad)
    want_grads = torch.autograd.grad(want := chunk_attention_reference(q, k, v), (q, k, v), grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
