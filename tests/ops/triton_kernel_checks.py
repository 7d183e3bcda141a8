"""Every Triton kernel of ops/ against the PyTorch reference beside it: a plain pytest module, run
by tests/ops/test_triton_kernels.py in a process of its own.

Why a process of its own: Triton's CPU interpreter is switched on by TRITON_INTERPRET=1 before
Triton is imported (its own library functions, tl.sum among them, are decorated at import), and
the suite's process has imported it long before. With the variable set the checks run on CPU;
without it, natively on the GPU. Errors are measured against an fp32 computation: bf16 results
may differ from the plain bf16 expressions by rounding.
"""

import itertools
import os

import pytest
import torch

from megatron_redi.model.rope import RotaryEmbedding
from megatron_redi.model_config import preset
from megatron_redi.ops import logprob_kernels as K
from megatron_redi.ops.adamw import adamw_reference, adamw_triton
from megatron_redi.ops.backends import choose
from megatron_redi.ops.qkv_rotary import split_qkv_rotary, split_qkv_rotary_reference
from megatron_redi.ops.rms_norm import rms_norm, rms_norm_reference
from megatron_redi.ops.swiglu import swiglu_linear, swiglu_linear_reference
from megatron_redi.parallel.logprob_head import sequence_logprobs

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
DTYPES = [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)]


def test_this_process_runs_the_kernels():
    assert choose(torch.device(DEVICE)) == "triton"


def backward_of(fn, *inputs, up):
    """fn's outputs and its inputs' gradients for the upstream gradients ``up``."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    outs, ups = (out, up) if isinstance(out, tuple) else ((out,), (up,))
    torch.autograd.backward(outs, ups)
    return [o.detach() for o in outs] + [leaf.grad for leaf in leaves]


def assert_close_to_fp32(got, want, dtype, tol):
    for i, (u, v) in enumerate(zip(got, want)):
        assert u.dtype == dtype, (i, u.dtype)
        err = ((u.float() - v).norm() / v.norm()).item()
        assert err < tol, (i, err)


def randn(*shape, g, dtype, scale=1.0, shift=0.0):
    return (shift + scale * torch.randn(*shape, generator=g)).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=str)
def test_rms_norm(dtype, tol):
    g = torch.Generator().manual_seed(0)
    x, dy = randn(37, 48, g=g, dtype=dtype), randn(37, 48, g=g, dtype=dtype)
    w = randn(48, g=g, dtype=dtype, scale=0.1, shift=1.0)
    got = backward_of(lambda a, b: rms_norm(a, b, 1e-6)[1], x, w, up=dy)
    want = backward_of(lambda a, b: rms_norm_reference(a, b, 1e-6)[1], x.float(), w.float(), up=dy.float())
    assert_close_to_fp32(got, want, dtype, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=str)
def test_rms_norm_with_the_residual_add(dtype, tol):
    g = torch.Generator().manual_seed(1)
    x, delta, dh, dy = (randn(37, 48, g=g, dtype=dtype) for _ in range(4))
    w = randn(48, g=g, dtype=dtype, scale=0.1, shift=1.0)
    got = backward_of(lambda a, b, d: rms_norm(a, b, 1e-6, d), x, w, delta, up=(dh, dy))
    want = backward_of(lambda a, b, d: rms_norm_reference(a, b, 1e-6, d), x.float(), w.float(), delta.float(),
                       up=(dh.float(), dy.float()))
    assert_close_to_fp32(got, want, dtype, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=str)
def test_swiglu_linear(dtype, tol):
    g = torch.Generator().manual_seed(2)
    gate_up = randn(29, 2 * 1100, g=g, dtype=dtype)  # f = 1100: two column blocks
    down = randn(24, 1100, g=g, dtype=dtype, scale=0.05)
    dy = randn(29, 24, g=g, dtype=dtype)
    got = backward_of(swiglu_linear, gate_up, down, up=dy)
    want = backward_of(swiglu_linear_reference, gate_up.float(), down.float(), up=dy.float())
    assert_close_to_fp32(got, want, dtype, tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_logprob_row_stats_and_dlogits(dtype):
    g = torch.Generator().manual_seed(3)
    logits = randn(13, 5000, g=g, dtype=dtype, scale=4.0)  # 5000: two 4096 blocks
    local = torch.randint(-2500, 5000, (13,), generator=g).to(DEVICE)  # some targets on other ranks
    lse = torch.logsumexp(logits.float(), -1)
    coeff = torch.randn(13, generator=g).to(DEVICE)
    for got, want in zip(K.row_stats(logits, local), K.row_stats_reference(logits, local)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for out_dtype in (torch.float32, torch.bfloat16):
        got = K.dlogits(logits.clone(), lse, local, coeff, out_dtype)
        want = K.dlogits_reference(logits, lse, local, coeff, out_dtype)
        assert got.dtype == out_dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-6)


def test_the_whole_head_through_the_kernels_equals_the_reference_path():
    g = torch.Generator().manual_seed(4)
    hidden, weight = randn(40, 16, g=g, dtype=torch.float32), randn(300, 16, g=g, dtype=torch.float32)
    targets = torch.randint(0, 300, (40,), generator=g).to(DEVICE)
    seq_index = (torch.arange(40) // 20).to(DEVICE)
    a = sequence_logprobs(hidden, weight, targets, seq_index, 2, kernels="triton")[0]
    b = sequence_logprobs(hidden, weight, targets, seq_index, 2, kernels="pytorch")[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture
def one_thread():
    """On several threads, how ATen cuts the buffer between its vector and scalar loops moves the
    reference's own last bits (one element 9 ulps apart from run to run, seen in CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("decay,scale,out_dtype", [(0.0, 1.0, None), (0.1, 0.3, torch.bfloat16)])
def test_adamw(one_thread, decay, scale, out_dtype):
    g = torch.Generator().manual_seed(5)
    n = 3 * 4096 + 123  # a partial last block
    p, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    m, v = 0.1 * torch.randn(n, generator=g), torch.rand(n, generator=g)
    ref = [t.clone() for t in (p, grad, m, v)]
    got = [t.clone().to(DEVICE) for t in (p, grad, m, v)]
    outs = [None, None] if out_dtype is None else [torch.full((n,), float("nan"), dtype=out_dtype, device=d)
                                                   for d in ("cpu", DEVICE)]
    sq_ref = adamw_reference(*ref, 1e-3, (0.9, 0.95), 1e-8, decay, 3, scale, outs[0])
    sq = adamw_triton(*got, 1e-3, (0.9, 0.95), 1e-8, decay, 3, scale, outs[1])
    for name, a, b in zip("pgmv", got, ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-6, atol=1e-7, msg=name)
    torch.testing.assert_close(sq.cpu(), sq_ref, rtol=1e-5, atol=0)
    assert not torch.equal(got[0].cpu(), p)  # it moved
    if out_dtype is not None:
        # each, its own new weights rounded to nearest (the interpreter truncates: within an ulp)
        assert torch.equal(outs[0], ref[0].to(out_dtype))
        new_p, out = got[0].cpu(), outs[1].cpu()
        if DEVICE == "cuda":
            assert torch.equal(out, new_p.to(out_dtype))
        assert ((out.float() - new_p).abs() <= new_p.abs() * 2.0 ** -7).all()


# hd 24: a head half that is not a power of two (the tiny preset's); 5 and 8 heads per KV group;
# with and without the q/k norms of Qwen3 (whose weight gradients are compared too)
@pytest.mark.parametrize("hd,dtype_tol,heads,norm", itertools.product((16, 24), DTYPES, ((2, 3), (1, 6)), (False, True)),
                         ids=str)
def test_split_qkv_rotary(hd, dtype_tol, heads, norm):
    (dtype, tol), (groups, queries) = dtype_tol, heads
    g = torch.Generator().manual_seed(6)
    positions = torch.cat([torch.arange(7), torch.arange(4)]).to(DEVICE)
    cos, sin = RotaryEmbedding(preset("tiny", head_dim=hd))(positions)
    qkv = (3 * torch.randn(11, groups, queries + 2, hd, generator=g)).to(DEVICE, dtype)
    weights = [(1 + 0.3 * torch.randn(hd, generator=g)).to(DEVICE, dtype) for _ in range(2)]
    ups = [torch.randn(11, n, hd, generator=g).to(DEVICE, dtype) for n in (groups * queries, groups, groups)]
    results = []
    for fn, cast in ((split_qkv_rotary, lambda t: t), (split_qkv_rotary_reference, lambda t: t.float())):
        x, ws = cast(qkv).clone().requires_grad_(), [cast(w).clone().requires_grad_() for w in weights]
        outs = fn(x, cos, sin, (*ws, 1e-6) if norm else None)
        sum((o.float() * u.float()).sum() for o, u in zip(outs, ups)).backward()
        results.append([o.detach() for o in outs] + [x.grad] + ([w.grad for w in ws] if norm else []))
    for i, (u, v) in enumerate(zip(*results)):
        assert u.is_contiguous(), i
    assert_close_to_fp32(results[0], results[1], dtype, tol)
