"""The fused log-prob head against torch.log_softmax: values, gradients, modes, TP, bad input."""

import pytest
import torch
import torch.distributed as dist
from multirank import assert_grads_close, gathered, merged_grads, run_ranks

from megatron_redi import main_grad
from megatron_redi.parallel import logprob_head as L
from megatron_redi.parallel.logprob_head import sequence_logprobs


def _problem(t=53, h=24, vocab=96, n=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(t, h, generator=g) * 0.5).to(dtype)
    weight = (torch.randn(vocab, h, generator=g) * 0.5).to(dtype)
    targets = torch.randint(0, vocab, (t,), generator=g)
    seq_index = torch.sort(torch.randint(0, n, (t,), generator=g)).values
    upstream = torch.randn(n, generator=g)
    return hidden, weight, targets, seq_index, upstream


def _reference(hidden, weight, targets, seq_index, n, upstream):
    """Full fp32 logits: the definition the fused head must match."""
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    token = torch.log_softmax(h @ w.t(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    logp_sum = torch.zeros(n, dtype=torch.float64).index_add_(0, seq_index, token)
    logp_sum.backward(upstream.double())
    return logp_sum.float(), h.grad.float(), w.grad.float()


def _run(hidden, weight, targets, seq_index, n, upstream, single, chunk):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    coeff = upstream[seq_index].float() if single else None
    logp_sum, count = sequence_logprobs(h, w, targets, seq_index, n, token_coeff=coeff, chunk_tokens=chunk)
    logp_sum.backward(upstream)
    return logp_sum.detach(), count, h.grad, w.grad


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_matches_log_softmax_fp32(single, chunk):
    hidden, weight, targets, seq_index, upstream = _problem()
    want, dh, dw = _reference(hidden, weight, targets, seq_index, 5, upstream)
    got, count, gh, gw = _run(hidden, weight, targets, seq_index, 5, upstream, single, chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert torch.equal(count, torch.bincount(seq_index, minlength=5))
    torch.testing.assert_close(gh, dh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, dw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("single", [False, True])
def test_bf16_inputs_stay_close_to_fp32(single):
    hidden, weight, targets, seq_index, upstream = _problem(dtype=torch.bfloat16)
    want, dh, dw = _reference(hidden, weight, targets, seq_index, 5, upstream)
    got, _, gh, gw = _run(hidden, weight, targets, seq_index, 5, upstream, single, 16)
    assert gh.dtype == gw.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for a, b in ((gh, dh), (gw, dw)):
        assert ((a.float() - b).norm() / b.norm()).item() < 1e-2


def test_single_pass_equals_two_pass():
    hidden, weight, targets, seq_index, upstream = _problem(seed=3)
    a = _run(hidden, weight, targets, seq_index, 5, upstream, single=False, chunk=9)
    b = _run(hidden, weight, targets, seq_index, 5, upstream, single=True, chunk=9)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def test_sequence_without_tokens_gives_zero_not_nan():
    hidden, weight, targets, _, _ = _problem(t=10)
    seq_index = torch.tensor([0] * 4 + [2] * 6)  # sequence 1 has no response token
    logp_sum, count = sequence_logprobs(hidden, weight, targets, seq_index, 3)
    assert count.tolist() == [4, 0, 6] and logp_sum[1].item() == 0.0
    assert torch.isfinite(logp_sum).all()
    empty = sequence_logprobs(hidden[:0], weight, targets[:0], seq_index[:0], 2)
    assert empty[0].tolist() == [0.0, 0.0] and empty[1].tolist() == [0, 0]


def test_weight_gradient_accumulates_into_main_grad():
    hidden, weight, targets, seq_index, upstream = _problem()
    _, _, _, dw = _run(hidden, weight, targets, seq_index, 5, upstream, single=True, chunk=16)
    w = weight.clone().requires_grad_()
    main_grad.attach(w, torch.ones_like(w, dtype=torch.float32), open_=True)
    sequence_logprobs(hidden, w, targets, seq_index, 5, token_coeff=upstream[seq_index])[0].backward(upstream)
    assert w.grad is None
    torch.testing.assert_close(main_grad.of(w), dw + 1)


def test_a_forward_time_gradient_write_outside_a_step_is_refused():
    """The single-pass head writes dW during the forward: with the step's window closed (before the
    gradients are zeroed, or after their reduction) that write would be lost or land in the next
    step, so it raises instead, naming the contract."""
    hidden, weight, targets, seq_index, upstream = _problem()
    w = weight.clone().requires_grad_()
    main_grad.attach(w, torch.zeros_like(w, dtype=torch.float32))  # as the trainer leaves it between steps
    with pytest.raises(main_grad.GradientContractError, match="outside a training step"):
        sequence_logprobs(hidden, w, targets, seq_index, 5, token_coeff=upstream[seq_index])
    assert not main_grad.of(w).any()
    sequence_logprobs(hidden, w, targets, seq_index, 5)  # two-pass: the forward writes nothing


def test_debug_check_catches_a_gradient_that_is_not_the_plan(monkeypatch):
    monkeypatch.setenv(L.DEBUG_ENV, "1")  # read at call time: set after the import, it holds
    hidden, weight, targets, seq_index, upstream = _problem()
    h = hidden.clone().requires_grad_()
    logp_sum, _ = sequence_logprobs(h, weight, targets, seq_index, 5, token_coeff=upstream[seq_index])
    with pytest.raises(RuntimeError, match="differs from the token_coeff"):
        logp_sum.backward(upstream * 2)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(targets=a["targets"] + 96), r"targets outside \[0, 96\)"),
    (lambda a: a.update(seq_index=a["seq_index"] + 1), r"seq_index outside \[0, 5\)"),
    (lambda a: a.update(targets=a["targets"][:-1]), "targets must be int64 of shape"),
    (lambda a: a.update(seq_index=a["seq_index"].int()), "seq_index must be int64"),
    (lambda a: a.update(weight=a["weight"][:, :-1]), "must be \\[t, h\\] and \\[V/tp, h\\]"),
    (lambda a: a.update(weight=a["weight"].double()), "hidden is torch.float32 but weight is torch.float64"),
    (lambda a: a.update(token_coeff=torch.ones(3)), "token_coeff must be float32 of shape"),
])
def test_bad_input_is_named(change, message):
    hidden, weight, targets, seq_index, _ = _problem()
    args = dict(hidden=hidden, weight=weight, targets=targets, seq_index=seq_index, num_seqs=5)
    change(args)
    with pytest.raises((ValueError, RuntimeError), match=message):
        sequence_logprobs(**args)


def _check_vocab_parallel(tp, single):
    """Each rank holds a vocab shard; values and gradients equal the TP=1 computation."""
    group, rank = dist.group.WORLD, dist.get_rank()
    hidden, weight, targets, seq_index, upstream = _problem(vocab=96)
    want = _run(hidden, weight, targets, seq_index, 5, upstream, single, 10)
    shard = weight.chunk(tp)[rank].clone().requires_grad_()
    h = hidden.clone().requires_grad_()
    coeff = upstream[seq_index] if single else None
    logp_sum, count = sequence_logprobs(h, shard, targets, seq_index, 5, group, coeff, chunk_tokens=10)
    logp_sum.backward(upstream)
    torch.testing.assert_close(logp_sum, want[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(count, want[1])
    torch.testing.assert_close(h.grad, want[2], rtol=1e-5, atol=1e-6)  # summed over TP by copy_to_tp
    torch.testing.assert_close(shard.grad, want[3].chunk(tp)[rank], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("single", [False, True])
def test_tp2_equals_tp1(single):
    run_ranks(2, _check_vocab_parallel, 2, single)


def test_tp4_equals_tp1():
    run_ranks(4, _check_vocab_parallel, 4, True)


# ---- the wrapper on the model: response rows only, sequence parallelism ----------------------

LENGTHS = [6, 10, 8]  # tokens per sequence; the first PROMPT tokens of each are prompt


def _micro_batch(vocab, prompt=3):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, vocab, (sum(LENGTHS),), generator=g)
    pos = torch.cat([torch.arange(n) for n in LENGTHS])
    seq_index = torch.cat([torch.full((n,), i) for i, n in enumerate(LENGTHS)])
    targets = torch.roll(ids, -1)  # next token; the last position of a sequence has none
    ends = torch.tensor(LENGTHS).cumsum(0) - 1
    # a label position i is a response token when its target (token i+1) is past the prompt
    loss_mask = (pos >= prompt - 1)
    loss_mask[ends] = False
    return ids, pos, [0, 6, 16, 24], targets, seq_index, loss_mask


def _reference_from_logits(model, ids, pos, offsets, targets, seq_index, loss_mask):
    logp = torch.log_softmax(model(ids, pos, offsets, return_logits=True), -1)
    token = logp.gather(1, targets[:, None]).squeeze(1) * loss_mask
    return torch.zeros(len(LENGTHS)).index_add_(0, seq_index, token)


def _check_head_wrapper(path, tp, single):
    from megatron_redi.model import from_pretrained
    from megatron_redi.parallel.logprob_head import head_logprobs
    from megatron_redi.parallel import initialize

    reference = from_pretrained(path)
    parallel = initialize(tensor_parallel_size=tp, sequence_parallel=tp > 1)
    model = from_pretrained(path, parallel)
    ids, pos, offsets, targets, seq_index, loss_mask = _micro_batch(model.cfg.vocab_size)
    upstream = torch.tensor([0.7, -1.3, 0.4])

    want = _reference_from_logits(reference, ids, pos, offsets, targets, seq_index, loss_mask)
    want.backward(upstream)
    loss_index = torch.nonzero(loss_mask).squeeze(1)
    logp_sum, count = head_logprobs(model, model(ids, pos, offsets), loss_index, targets, seq_index,
                                    len(LENGTHS), seq_coeff=upstream if single else None, chunk_tokens=5)
    assert count.tolist() == [int(loss_mask[seq_index == i].sum()) for i in range(3)]
    torch.testing.assert_close(logp_sum, want.detach(), rtol=1e-5, atol=1e-5)
    logp_sum.backward(upstream)
    from megatron_redi.parallel import sync_replicated_grads
    sync_replicated_grads(model)
    got = merged_grads(model, lambda g: gathered(g, parallel.tp_group, tp) if tp > 1 else [g])
    assert_grads_close(got, merged_grads(reference, lambda g: [g]))


@pytest.mark.parametrize("single", [False, True])
def test_head_on_model_tp2_sp_equals_full_logits(tiny_checkpoint, single):
    run_ranks(2, _check_head_wrapper, tiny_checkpoint(num_kv_heads=1), 2, single)


def test_prompt_rows_never_reach_the_head(tiny_checkpoint):
    """Changing the targets of prompt positions changes nothing; their hidden rows get no gradient."""
    from megatron_redi.model import from_pretrained
    from megatron_redi.parallel.logprob_head import head_logprobs

    model = from_pretrained(tiny_checkpoint())
    ids, pos, offsets, targets, seq_index, loss_mask = _micro_batch(model.cfg.vocab_size)
    loss_index = torch.nonzero(loss_mask).squeeze(1)
    hidden = model(ids, pos, offsets).detach().requires_grad_()
    a, _ = head_logprobs(model, hidden, loss_index, targets, seq_index, 3)
    other = torch.where(loss_mask, targets, (targets + 1) % model.cfg.vocab_size)
    b, _ = head_logprobs(model, hidden, loss_index, other, seq_index, 3)
    assert torch.equal(a, b)
    a.sum().backward()
    assert (hidden.grad[~loss_mask] == 0).all() and (hidden.grad[loss_mask].abs().sum(-1) > 0).all()
