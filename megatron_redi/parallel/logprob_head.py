"""Per-sequence masked log-probs through a vocab-parallel LM head, without [t, V] logits.

For the response tokens of a packed micro-batch (``hidden [t, h]``, ``targets [t]``, the sequence
of each token ``seq_index [t]``) it returns, per sequence, ``logp_sum[n] = sum_i log p(target_i)``
and ``token_count[n]``. Logits exist one chunk of tokens at a time (``[c, V/tp]``).

Two modes:

- two-pass (any loss; DPO and SimPO need it): the forward keeps only each token's log-sum-exp;
  the backward recomputes each chunk's logits and forms ``g * (onehot - softmax)`` with ``g`` the
  upstream gradient of the token's sequence: 4 GEMMs (logits twice, dX, dW).
- single-pass (losses linear in logp_sum: REDI, SFT): ``token_coeff [t]`` is each token's
  d loss / d logp, known before the forward (``losses.sequence_coefficients``); the forward
  computes dX and dW chunk by chunk right after the logits, 3 GEMMs, and the backward only hands
  them out. Its upstream gradient must equal the plan's coefficients; with MEGATRON_REDI_DEBUG=1
  the backward checks that it does (a host sync, so off by default).

Vocab parallelism: ``weight`` is the rank's shard ``[V/tp, h]`` of rows
``[r V/tp, (r+1) V/tp)``. Per chunk, the row max is all-reduced (MAX) over ``tp_group``, then the
rescaled sum-exp and the target logit (non-zero only on the owning rank) in one all-reduce (SUM).
All reductions are fp32; dW accumulates in fp32 (into the trainer's fp32 gradient when it keeps
one, megatron_redi/main_grad.py: so no extra buffer; a write outside a training step is refused). The returned gradient of ``hidden`` is this rank's vocab shard's
contribution; the input mapping (``copy_to_tp``, or the token gather under sequence parallelism)
sums it over TP, as for any column-parallel layer.
"""

from __future__ import annotations

import os

import torch

from .. import main_grad
from ..ops.logprob_kernels import KERNELS
from .collectives import group_rank, group_size, raw_all_reduce
from .context import ContextShard
from .mappings import copy_to_tp, gather_tokens, reduce_from_tp

DEBUG_ENV = "MEGATRON_REDI_DEBUG"  # read at each backward
# fp32 logits per chunk, which bounds the extra memory of the head. Larger on GPU: each chunk's
# weight-gradient GEMM reads and writes the whole fp32 [V/tp, h] accumulator, so small chunks spend
# much of the head's time on that traffic (docs/logprob_head.md has the measurement).
CHUNK_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


def default_chunk_tokens(vocab_local: int, device: torch.device) -> int:
    return max(16, CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"]) // (4 * vocab_local))


def _has_mm_out_dtype() -> bool:
    try:
        a = torch.zeros(1, 1, dtype=torch.bfloat16, device="cuda")
        torch.mm(a, a, out_dtype=torch.float32)
        return True
    except (TypeError, RuntimeError):
        return False


_MM_FP32_OUT = None


def _chunk_logits(h, weight):
    """fp32 logits of a chunk: exact fp32 math on CPU; on CUDA the bf16 GEMM with an fp32 output
    where torch offers it (no rounding of logits to bf16), else the bf16 GEMM."""
    global _MM_FP32_OUT
    if h.device.type != "cuda" or h.dtype == torch.float32:
        return h.float() @ weight.float().t()
    if _MM_FP32_OUT is None:
        _MM_FP32_OUT = _has_mm_out_dtype()
    return torch.mm(h, weight.t(), out_dtype=torch.float32) if _MM_FP32_OUT else h @ weight.t()


def _dlogits_dtype(hidden):
    """dlogits feed two GEMMs (dX, dW). On CUDA they are rounded to the GEMM dtype (bf16), which
    puts a floor of about 1e-3 under the gradients' relative error; the CPU reference keeps them
    in fp32 and rounds only dX's input."""
    return torch.float32 if hidden.device.type == "cpu" else hidden.dtype


def _lse_and_target(logits, local, tp_group, kernels):
    row_max, sum_exp, target = kernels.row_stats(logits, local)
    if group_size(tp_group) > 1:
        global_max = row_max.clone()
        raw_all_reduce(global_max, tp_group, "max")
        both = torch.stack((sum_exp * torch.exp(row_max - global_max), target))
        raw_all_reduce(both, tp_group)
        row_max, (sum_exp, target) = global_max, both
    return row_max + torch.log(sum_exp), target


def _wgrad_buffer(weight):
    """Where dW accumulates: the trainer's fp32 gradient (autograd gets None for the weight; the
    owner's hook, which torch runs all the same, adds nothing), else a new buffer."""
    if main_grad.of(weight) is not None:
        return main_grad.write(weight), True
    return torch.zeros(weight.shape, dtype=torch.float32, device=weight.device), False


class _SequenceLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, seq_index, num_seqs, tp_group, token_coeff, kernels, chunk):
        t, vocab_local = hidden.shape[0], weight.shape[0]
        rank = group_rank(tp_group)
        local = targets - rank * vocab_local  # outside [0, V/tp): another rank's token
        lse = torch.empty(t, dtype=torch.float32, device=hidden.device)
        logp = torch.empty(t, dtype=torch.float32, device=hidden.device)
        single = token_coeff is not None
        if single:
            d_hidden = torch.empty_like(hidden)
            d_weight, into_main = _wgrad_buffer(weight)
        for s in range(0, t, chunk):
            e = min(s + chunk, t)
            h = hidden[s:e]
            logits = _chunk_logits(h, weight)  # [c, V/tp]
            lse[s:e], target = _lse_and_target(logits, local[s:e], tp_group, kernels)
            logp[s:e] = target - lse[s:e]
            if single:
                d = kernels.dlogits(logits, lse[s:e], local[s:e], token_coeff[s:e], _dlogits_dtype(hidden))
                del logits
                d_hidden[s:e] = d.to(hidden.dtype) @ weight
                kernels.wgrad_accumulate(d_weight, d, h)
        logp_sum = kernels.segment_sum(logp, seq_index, num_seqs)
        count = torch.zeros(num_seqs, dtype=torch.int64, device=hidden.device)
        count.index_add_(0, seq_index, torch.ones_like(seq_index))
        ctx.mark_non_differentiable(count)
        ctx.single, ctx.kernels, ctx.chunk, ctx.tp_group = single, kernels, chunk, tp_group
        if single:
            ctx.into_main = into_main
            ctx.save_for_backward(d_hidden, None if into_main else d_weight, token_coeff, seq_index)
            ctx.weight_dtype = weight.dtype
        else:
            ctx.save_for_backward(hidden, weight, local, seq_index, lse)
        return logp_sum, count

    @staticmethod
    def backward(ctx, grad_logp_sum, _grad_count):
        none = (None,) * 7
        if ctx.single:
            d_hidden, d_weight, token_coeff, seq_index = ctx.saved_tensors
            if os.environ.get(DEBUG_ENV) == "1":
                upstream = grad_logp_sum[seq_index]
                if not torch.allclose(upstream, token_coeff, rtol=1e-5, atol=1e-12):
                    raise RuntimeError("single-pass log-prob head: the loss's gradient differs from the "
                                       "token_coeff it was planned with")
            dw = None if ctx.into_main else d_weight.to(ctx.weight_dtype)
            return (d_hidden, dw) + none
        hidden, weight, local, seq_index, lse = ctx.saved_tensors
        kernels, chunk = ctx.kernels, ctx.chunk
        g = grad_logp_sum.float()[seq_index]  # [t]: each token's upstream gradient
        d_hidden = torch.empty_like(hidden)
        d_weight, into_main = _wgrad_buffer(weight)
        for s in range(0, hidden.shape[0], chunk):
            e = min(s + chunk, hidden.shape[0])
            logits = _chunk_logits(hidden[s:e], weight)
            d = kernels.dlogits(logits, lse[s:e], local[s:e], g[s:e], _dlogits_dtype(hidden))
            del logits
            d_hidden[s:e] = d.to(hidden.dtype) @ weight
            kernels.wgrad_accumulate(d_weight, d, hidden[s:e])
        return (d_hidden, None if into_main else d_weight.to(weight.dtype)) + none


def _validate(hidden, weight, targets, seq_index, num_seqs, token_coeff, tp_size):
    """Shapes and dtypes on the host; value ranges with device-side asserts (no host sync)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be [t, h] and [V/tp, h]")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden is {hidden.dtype} but weight is {weight.dtype}")
    t = hidden.shape[0]
    for name, x in (("targets", targets), ("seq_index", seq_index)):
        if x.shape != (t,) or x.dtype != torch.int64:
            raise ValueError(f"{name} must be int64 of shape [{t}], got {x.dtype} {tuple(x.shape)}")
    if token_coeff is not None and (token_coeff.shape != (t,) or token_coeff.dtype != torch.float32):
        raise ValueError(f"token_coeff must be float32 of shape [{t}], got {token_coeff.dtype} {tuple(token_coeff.shape)}")
    if t:
        vocab = weight.shape[0] * tp_size
        torch._assert_async(((targets >= 0) & (targets < vocab)).all(), f"targets outside [0, {vocab})")
        torch._assert_async(((seq_index >= 0) & (seq_index < num_seqs)).all(), f"seq_index outside [0, {num_seqs})")


def _logprobs(hidden, weight, targets, seq_index, num_seqs, tp_group, token_coeff, chunk_tokens, kernels):
    tp = group_size(tp_group)
    _validate(hidden, weight, targets, seq_index, num_seqs, token_coeff, tp)
    kernels = KERNELS.for_device(hidden.device, kernels)
    chunk = chunk_tokens or default_chunk_tokens(weight.shape[0], hidden.device)
    return _SequenceLogprobs.apply(hidden, weight, targets, seq_index, num_seqs, tp_group,
                                   token_coeff, kernels, chunk)


def sequence_logprobs(hidden, weight, targets, seq_index, num_seqs: int, tp_group=None,
                      token_coeff=None, chunk_tokens: int | None = None, kernels: str | None = None):
    """``(logp_sum [num_seqs] fp32, token_count [num_seqs] int64)`` for the rows of response tokens.

    hidden [t, h] (the same on every TP rank), weight [V/tp, h] (this rank's vocab shard),
    targets [t] int64 in [0, V), seq_index [t] int64 in [0, num_seqs), token_coeff [t] fp32 or
    None (None: two-pass mode). ``kernels`` forces "pytorch", "triton" or "cuda-extension".
    """
    return _logprobs(copy_to_tp(hidden, tp_group), weight, targets, seq_index, num_seqs, tp_group,
                     token_coeff, chunk_tokens, kernels)


def head_logprobs(model, hidden, loss_index, targets, seq_index, num_seqs: int, seq_coeff=None,
                  chunk_tokens: int | None = None, kernels: str | None = None, context: ContextShard | None = None):
    """The model's final hidden states -> per-sequence log-probs of a packed micro-batch.

    hidden: [t, h], or [t/tp, h] under sequence parallelism; loss_index [t_resp]: positions of
    response tokens (label positions), computed on the host with the batch so that selecting them
    needs no device sync; targets, seq_index [t] for the whole micro-batch; seq_coeff [num_seqs]
    (``losses.sequence_coefficients``) selects single-pass mode. Under context parallelism
    ``hidden`` holds the rank's rows of ``context``: the head runs on its response tokens and each
    sequence's sums are added over the CP group (forward all-reduce, backward identity: every CP
    rank computes the same loss from the same sums, and its tokens' gradients are its own share).
    """
    parallel = model.parallel
    group = parallel.tp_group
    full = gather_tokens(hidden, group) if parallel.sequence_parallel else copy_to_tp(hidden, group)
    rows, positions = (loss_index, loss_index) if context is None else (context.loss_rows, context.loss_tokens)
    seq = seq_index.index_select(0, positions)
    coeff = seq_coeff.float().index_select(0, seq) if seq_coeff is not None else None
    logp_sum, count = _logprobs(full.index_select(0, rows), model.head_weight, targets.index_select(0, positions),
                                seq, num_seqs, group, coeff, chunk_tokens, kernels)
    if context is None or context.cp_size == 1:
        return logp_sum, count
    return reduce_from_tp(logp_sum, parallel.cp_group), reduce_from_tp(count, parallel.cp_group)
