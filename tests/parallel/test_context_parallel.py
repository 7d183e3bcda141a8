"""Context parallelism equals CP=1: the split itself, then a whole step (loss, LogPS, every gradient)
for REDI, DPO and SFT at CP=2 and TP=2 x CP=2, on micro-batches whose sequences start and end in
the middle of a rank's chunks (lengths divisible by nothing in particular, a sequence shorter than
the chunk count)."""

import numpy as np
import pytest
import torch
from multirank import assert_grads_close, gathered, merged_grads, run_ranks

from megatron_redi.data import TrainingItem, pack
from megatron_redi.data.dataset import Sequence
from megatron_redi.losses import LossConfig
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import ParallelState, initialize
from megatron_redi.parallel.context import chunk_bounds, split
from megatron_redi.training.optimizer import MasterParams
from megatron_redi.training.step import forward_backward

# (prompt, chosen, rejected) token counts: odd, prime, one shorter than 2 cp
PAIRS = [(4, 9, 13), (2, 1, 3), (6, 17, 5), (3, 11, 2)]


def test_every_token_lands_on_exactly_one_rank_and_the_causal_work_is_balanced():
    offsets, loss = [0, 10, 13, 14, 301], torch.tensor([3, 4, 5, 11, 12, 20, 21, 299])
    for cp in (2, 3, 4):
        shards = [split(offsets, loss, cp, r, multiple=2) for r in range(cp)]
        assert len({s.rows for s in shards}) == 1 and shards[0].rows % 2 == 0
        owned = torch.cat([s.tokens[:s.real_rows] for s in shards])
        assert sorted(owned.tolist()) == list(range(offsets[-1]))
        # kv_order sends each token to its owner's row in the gathered [cp n] buffer
        gathered_rows = torch.cat([s.tokens for s in shards])
        assert torch.equal(gathered_rows[shards[0].kv_order], torch.arange(offsets[-1]))
        assert sorted(torch.cat([s.loss_tokens for s in shards]).tolist()) == loss.tolist()
        for s in shards:
            assert torch.equal(s.tokens[s.loss_rows], s.loss_tokens)
        # causal work of the long sequence (287 tokens): a token at position p attends to p + 1 keys
        bounds = chunk_bounds(287, cp)
        work = [sum(p + 1 for c in (r, 2 * cp - 1 - r) for p in range(bounds[c], bounds[c + 1])) for r in range(cp)]
        assert max(work) / min(work) < 1.03, work  # one chunk per rank would give the last 2cp - 1 times the first's


def test_a_forward_that_builds_gradients_refuses_to_run_unsplit(tiny_checkpoint):
    model = from_pretrained(tiny_checkpoint())
    model.parallel = ParallelState(world_size=2, cp_size=2)
    with pytest.raises(ValueError, match="ContextShard"):
        model(torch.zeros(4, dtype=torch.int64), torch.arange(4), [0, 4])


def _units(vocab: int, sft: bool, with_ref: bool) -> list[TrainingItem]:
    rng = np.random.default_rng(0)
    units = []
    for i, (prompt, chosen, rejected) in enumerate(PAIRS):
        ids = [rng.integers(1, vocab, prompt + n) for n in (chosen, rejected)]
        seqs = tuple(Sequence(t, prompt) for t in ids)
        if sft:
            units += [TrainingItem(2 * i, seqs[:1]), TrainingItem(2 * i + 1, seqs[1:])]
        else:
            units.append(TrainingItem(i, seqs, (-30.0 - i, -41.5 + i) if with_ref else None))
    return units


def _step(model, master, loss, sft, tp_pad):
    units = _units(model.cfg.vocab_size, sft, loss.type == "dpo")
    total = sum(u.sequences[0].response_len for u in units) if sft else len(units)
    batches = pack(units, 40, tp_pad, 0)  # several micro-batches, a sequence in the middle of each
    work = forward_backward(model, master, batches, loss, float(total))
    for _, p in master.grads.named_params():
        p.grad = p.main_grad.clone()
    return work


def _check_step(path, tp, cp, loss_type):
    loss = LossConfig(type=loss_type)
    sft = loss_type == "sft"
    reference = from_pretrained(path)
    want = _step(reference, MasterParams(reference, ParallelState()), loss, sft, 1)

    parallel = initialize(tensor_parallel_size=tp, sequence_parallel=True, context_parallel_size=cp)
    model = from_pretrained(path, parallel)
    got = _step(model, MasterParams(model, parallel), loss, sft, tp)

    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-7)
    assert got.metric_sums.keys() == want.metric_sums.keys()
    for name in want.metric_sums:  # LogPS, lengths, rewards
        torch.testing.assert_close(got.metric_sums[name], want.metric_sums[name], rtol=1e-5, atol=1e-6)
    assert got.seq_lengths == want.seq_lengths and got.response_tokens == want.response_tokens
    shards = (lambda g: gathered(g, parallel.tp_group, tp)) if tp > 1 else (lambda g: [g])
    assert_grads_close(merged_grads(model, shards), merged_grads(reference, lambda g: [g]))


@pytest.mark.parametrize("arch,loss_type", [("qwen2", "redi"), ("qwen2", "dpo"), ("qwen2", "sft"), ("qwen3", "redi")])
def test_cp2_step_equals_cp1(tiny_checkpoint, arch, loss_type):
    run_ranks(2, _check_step, tiny_checkpoint(arch=arch), 1, 2, loss_type)


@pytest.mark.parametrize("loss_type", ["redi", "dpo", "sft"])
def test_tp2_cp2_step_equals_tp1_cp1(tiny_checkpoint, loss_type):
    run_ranks(4, _check_step, tiny_checkpoint(num_kv_heads=2), 2, 2, loss_type)


def test_cp4_step_equals_cp1(tiny_checkpoint):
    """Four ranks of one sequence each: some chunks empty, a sequence shorter than 2 cp = 8."""
    run_ranks(4, _check_step, tiny_checkpoint(), 1, 4, "redi")


def _emulated(q, k, v, offsets, cp, backend, monkeypatch):
    """Every CP rank's attention in one process: the all-gather replaced by the concatenation of
    the ranks' K/V; the rows put back in micro-batch order."""
    from megatron_redi.model import attention

    shards = [split(offsets, torch.zeros(0, dtype=torch.int64), cp, r).to(q.device) for r in range(cp)]
    everyone = torch.cat([torch.cat((k[s.tokens], v[s.tokens]), dim=1) for s in shards])
    monkeypatch.setattr(attention, "gather_tokens", lambda x, group: everyone)
    out = torch.empty_like(q)
    for s in shards:
        local = attention.context_attention(q[s.tokens], k[s.tokens], v[s.tokens], s, None, backend)
        assert not local[s.real_rows:].any()  # padding rows
        out[s.tokens[:s.real_rows]] = local[:s.real_rows]
    return out


def _qkv(lengths, device, dtype):
    g = torch.Generator().manual_seed(0)
    t = sum(lengths)
    q, k, v = (torch.randn(t, n, 16, generator=g).to(device, dtype) for n in (4, 2, 2))
    return q, k, v, np.cumsum([0, *lengths]).tolist()


@pytest.mark.parametrize("cp", [2, 3, 4])
def test_emulated_context_attention_equals_causal_attention(monkeypatch, cp):
    from megatron_redi.batch import SeqBoundaries
    from megatron_redi.model.attention import causal_attention

    q, k, v, offsets = _qkv([37, 3, 1, 64], "cpu", torch.float32)
    want = causal_attention(q, k, v, SeqBoundaries.from_offsets(offsets, "cpu"), "sdpa")
    torch.testing.assert_close(_emulated(q, k, v, offsets, cp, "sdpa", monkeypatch), want, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["sdpa", "varlen"])
def test_emulated_context_attention_on_cuda(monkeypatch, backend):
    """Both backends under CP on the GPU, bf16, against the whole sequences' fp32 attention on CPU."""
    from megatron_redi.batch import SeqBoundaries
    from megatron_redi.model.attention import causal_attention, varlen_available

    if backend == "varlen" and not varlen_available(torch.device("cuda")):
        pytest.skip("this torch has no varlen attention")
    q, k, v, offsets = _qkv([1000, 3, 17, 2500], "cpu", torch.float32)
    want = causal_attention(q, k, v, SeqBoundaries.from_offsets(offsets, "cpu"), "sdpa")
    got = _emulated(*(x.to("cuda", torch.bfloat16) for x in (q, k, v)), offsets, 2, backend, monkeypatch)
    torch.testing.assert_close(got.float().cpu(), want, rtol=2e-2, atol=2e-2)
