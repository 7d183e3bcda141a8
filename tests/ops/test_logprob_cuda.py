"""The CUDA extension's kernels against their PyTorch references, and the head on a GPU."""

import os

import pytest
import torch

from megatron_redi import main_grad
from megatron_redi.ops import logprob_kernels as K
from megatron_redi.ops.backends import cuda_extension
from megatron_redi.parallel.logprob_head import sequence_logprobs

pytestmark = pytest.mark.cuda


def _extension():
    ext = cuda_extension()
    if ext is None:
        if os.environ.get("MEGATRON_REDI_EXPECT_CUDA_EXT") == "1":
            pytest.fail("the CUDA extension was expected (MEGATRON_REDI_EXPECT_CUDA_EXT=1) but is not built")
        pytest.skip("the CUDA extension is not built in this install")
    return ext


def _chunk(c=67, vocab=50_000, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = (torch.randn(c, vocab, device="cuda", generator=g) * 4).to(dtype)
    local = torch.randint(-vocab // 2, vocab, (c,), device="cuda", generator=g)  # some not owned
    lse = torch.logsumexp(logits.float(), -1)
    coeff = torch.randn(c, device="cuda", generator=g)
    return logits, local, lse, coeff


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_stats_matches_reference(dtype):
    ext = _extension()
    logits, local, _, _ = _chunk(dtype=dtype)
    for got, want in zip(ext.row_stats(logits, local), K.row_stats_reference(logits, local)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
                                             (torch.float32, torch.float32)])
def test_dlogits_matches_reference(dtype, out_dtype):
    _extension()
    logits, local, lse, coeff = _chunk(dtype=dtype)
    want = K.dlogits_reference(logits, lse, local, coeff, out_dtype)
    # through the head's own wrapper, which hands the raw kernel its ``out`` (logits itself when the dtypes agree)
    kernels = K.KERNELS.for_device(logits.device, prefer="cuda-extension")
    given = logits.clone()
    got = kernels.dlogits(given, lse, local, coeff, out_dtype)
    assert got.dtype == out_dtype and (got.data_ptr() == given.data_ptr()) == (dtype == out_dtype)
    tol = 1e-6 if out_dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=1e-6)


def test_segment_sum_matches_reference():
    ext = _extension()
    values = torch.randn(10_000, device="cuda")
    index = torch.sort(torch.randint(0, 7, (10_000,), device="cuda")).values
    torch.testing.assert_close(ext.segment_sum(values, index, 9), K.segment_sum_reference(values, index, 9),
                               rtol=1e-5, atol=1e-4)


def test_wgrad_accumulate_matches_reference():
    ext = _extension()
    g = torch.Generator(device="cuda").manual_seed(1)
    d = torch.randn(96, 4096, device="cuda", generator=g).bfloat16()
    h = torch.randn(96, 256, device="cuda", generator=g).bfloat16()
    acc = torch.randn(4096, 256, device="cuda", generator=g)
    want = acc + d.float().t() @ h.float()
    ext.wgrad_accumulate(acc, d, h)
    torch.testing.assert_close(acc, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("single", [False, True])
def test_head_on_gpu_matches_fp32(single):
    kernels = "cuda-extension" if cuda_extension() is not None else "pytorch"
    g = torch.Generator(device="cuda").manual_seed(2)
    t, h_dim, vocab, n = 4096, 512, 151_936, 2
    hidden = (torch.randn(t, h_dim, device="cuda", generator=g) * 0.5).bfloat16()
    weight = (torch.randn(vocab, h_dim, device="cuda", generator=g) * 0.02).bfloat16()
    targets = torch.randint(0, vocab, (t,), device="cuda", generator=g)
    seq_index = (torch.arange(t, device="cuda") >= t // 2).long()
    upstream = torch.tensor([-1.0 / (t // 2), 0.8 / (t // 2)], device="cuda")

    def run(hd, wt, kern, coeff):
        hd, wt = hd.clone().requires_grad_(), wt.clone().requires_grad_()
        main_grad.attach(wt, torch.zeros(wt.shape, device="cuda"), open_=True)
        logp, _ = sequence_logprobs(hd, wt, targets, seq_index, n, token_coeff=coeff, kernels=kern)
        logp.backward(upstream)
        return logp.detach(), hd.grad.float(), main_grad.of(wt)

    want = run(hidden.float(), weight.float(), "pytorch", None)
    got = run(hidden, weight, kernels, upstream[seq_index] if single else None)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-2)
    err_dw = ((got[2] - want[2]).norm() / want[2].norm()).item()
    err_dx = ((got[1] - want[1]).norm() / want[1].norm()).item()
    assert err_dw <= 1e-3, err_dw  # fp32 accumulation of dW
    assert err_dx <= 3e-3, err_dx  # dX is bf16: its own rounding is about 1.1e-3
