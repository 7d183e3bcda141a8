"""Every Triton kernel of ops/ against the PyTorch reference beside it.

On CPU they run under Triton's interpreter (TRITON_INTERPRET=1, set before Triton is imported,
hence a fresh process); on a GPU the cuda-marked test runs them natively. Errors are measured
against an fp32 computation: bf16 results may differ from the plain bf16 expressions by rounding.
"""

import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (CI installs it)")

CHECK = r'''
import torch
from megatron_redi.ops.backends import choose
from megatron_redi.ops.rms_norm import rms_norm, rms_norm_reference
from megatron_redi.ops.swiglu import swiglu_linear, swiglu_linear_reference

device = "{device}"
assert choose(torch.device(device)) == "triton"

def run(fn, *inputs, up):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    outs, ups = (out, up) if isinstance(out, tuple) else ((out,), (up,))
    torch.autograd.backward(outs, ups)
    return [o.detach() for o in outs] + [leaf.grad for leaf in leaves]

for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 48, generator=g).to(device, dtype)
    w = (1 + 0.1 * torch.randn(48, generator=g)).to(device, dtype)
    dy, delta, dh = (torch.randn(37, 48, generator=g).to(device, dtype) for _ in range(3))
    gu = torch.randn(29, 2 * 1100, generator=g).to(device, dtype)  # f = 1100: two column blocks
    wd = (0.05 * torch.randn(24, 1100, generator=g)).to(device, dtype)
    dy2 = torch.randn(29, 24, generator=g).to(device, dtype)
    cases = [("rms_norm", run(lambda a, b: rms_norm(a, b, 1e-6)[1], x, w, up=dy),
              run(lambda a, b: rms_norm_reference(a, b, 1e-6)[1], x.float(), w.float(), up=dy.float())),
             ("add_rms_norm", run(lambda a, b, d: rms_norm(a, b, 1e-6, d), x, w, delta, up=(dh, dy)),
              run(lambda a, b, d: rms_norm_reference(a, b, 1e-6, d), x.float(), w.float(), delta.float(),
                  up=(dh.float(), dy.float()))),
             ("swiglu_linear", run(swiglu_linear, gu, wd, up=dy2),
              run(swiglu_linear_reference, gu.float(), wd.float(), up=dy2.float()))]
    for name, got, want in cases:
        for i, (u, v) in enumerate(zip(got, want)):
            assert u.dtype == dtype, (name, i, u.dtype)
            err = ((u.float() - v).norm() / v.norm()).item()
            assert err < tol, (name, str(dtype), i, err)
print("triton kernels match")
'''


LOGPROB_CHECK = r'''
import torch
from megatron_redi.ops import logprob_kernels as K
from megatron_redi.parallel.logprob_head import sequence_logprobs

device = "{device}"
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.bfloat16):
    logits = (torch.randn(13, 5000, generator=g) * 4).to(device, dtype)  # 5000: two 4096 blocks
    local = torch.randint(-2500, 5000, (13,), generator=g).to(device)  # some targets on other ranks
    lse = torch.logsumexp(logits.float(), -1)
    coeff = torch.randn(13, generator=g).to(device)
    for got, want in zip(K.row_stats(logits, local), K.row_stats_reference(logits, local)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for out_dtype in (torch.float32, torch.bfloat16):
        got = K.dlogits(logits.clone(), lse, local, coeff, out_dtype)
        want = K.dlogits_reference(logits, lse, local, coeff, out_dtype)
        assert got.dtype == out_dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-6)
# the whole head through the Triton kernels equals the reference path
hidden = torch.randn(40, 16, generator=g).to(device)
weight = torch.randn(300, 16, generator=g).to(device)
targets = torch.randint(0, 300, (40,), generator=g).to(device)
seq_index = (torch.arange(40) // 20).to(device)
a = sequence_logprobs(hidden, weight, targets, seq_index, 2, kernels="triton")[0]
b = sequence_logprobs(hidden, weight, targets, seq_index, 2, kernels="pytorch")[0]
torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
print("triton kernels match")
'''


ADAMW_CHECK = r'''
import torch
from megatron_redi.ops.adamw import adamw_reference, adamw_triton

# One thread: on several, how ATen cuts the buffer between its vector and scalar loops moves the
# reference's own last bits (one element 9 ulps apart from run to run, seen in CI).
torch.set_num_threads(1)
device = "{device}"
g = torch.Generator().manual_seed(0)
n = 3 * 4096 + 123  # a partial last block
for decay, scale, out_dtype in ((0.0, 1.0, None), (0.1, 0.3, torch.bfloat16)):
    p, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    m, v = 0.1 * torch.randn(n, generator=g), torch.rand(n, generator=g)
    ref = [t.clone() for t in (p, grad, m, v)]
    got = [t.clone().to(device) for t in (p, grad, m, v)]
    outs = [None, None] if out_dtype is None else [torch.full((n,), float("nan"), dtype=out_dtype, device=d)
                                                   for d in ("cpu", device)]
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
        if device == "cuda":
            assert torch.equal(out, new_p.to(out_dtype))
        assert ((out.float() - new_p).abs() <= new_p.abs() * 2.0 ** -7).all()
print("triton kernels match")
'''


ROTARY_CHECK = r'''
import itertools
import torch
from megatron_redi.model_config import preset
from megatron_redi.model.rope import RotaryEmbedding
from megatron_redi.ops.qkv_rotary import split_qkv_rotary, split_qkv_rotary_reference

device = "{device}"
g = torch.Generator().manual_seed(0)
positions = torch.cat([torch.arange(7), torch.arange(4)]).to(device)
# hd 24: a head half that is not a power of two (the tiny preset's); 5 and 8 heads per KV group
for hd, (dtype, tol), (groups, queries) in itertools.product(
        (16, 24), ((torch.float32, 1e-6), (torch.bfloat16, 1e-2)), ((2, 3), (1, 6))):
    cos, sin = RotaryEmbedding(preset("tiny", head_dim=hd))(positions)
    qkv = torch.randn(11, groups, queries + 2, hd, generator=g).to(device, dtype)
    ups = [torch.randn(11, n, hd, generator=g).to(device, dtype) for n in (groups * queries, groups, groups)]
    results = []
    for fn, x in ((split_qkv_rotary, qkv), (split_qkv_rotary_reference, qkv.float())):
        x = x.clone().requires_grad_()
        outs = fn(x, cos, sin)
        sum((o.float() * u.float()).sum() for o, u in zip(outs, ups)).backward()
        results.append([o.detach() for o in outs] + [x.grad])
    for i, (u, v) in enumerate(zip(*results)):
        assert u.dtype == dtype and u.is_contiguous(), (i, u.dtype)
        err = ((u.float() - v).norm() / v.norm()).item()
        assert err < tol, (hd, str(dtype), groups, i, err)
print("triton kernels match")
'''


CHECKS = {"rms_norm_swiglu": CHECK, "logprob": LOGPROB_CHECK, "adamw": ADAMW_CHECK, "qkv_rotary": ROTARY_CHECK}

def _check(script, device, env):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script.format(device=device)], capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHONPATH": root})
    assert proc.returncode == 0 and "triton kernels match" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_under_the_interpreter(name):
    _check(CHECKS[name], "cpu", {"TRITON_INTERPRET": "1"})


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_gpu(name):
    _check(CHECKS[name], "cuda", {})
