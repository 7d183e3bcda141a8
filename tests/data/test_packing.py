import numpy as np
import pytest
import torch

from megatron_redi.data import GlobalBatchSampler, Sequence, TrainingItem, build_micro_batch, pack


def seq(prompt, response, start=1):
    tokens = np.arange(start, start + prompt + response, dtype=np.int64)
    return Sequence(tokens, prompt)


def pair(item, prompt, chosen, rejected):
    return TrainingItem(item, (seq(prompt, chosen, 100 * item), seq(prompt, rejected, 100 * item + 50)))


def test_micro_batch_fields_are_consistent():
    units = [pair(0, 3, 4, 2), pair(1, 2, 3, 5)]
    mb = build_micro_batch(units, pad_multiple=4)
    lengths = [7, 5, 5, 7]
    assert mb.num_seqs == 4 and mb.num_tokens == 24 + 0  # 24 is already a multiple of 4
    assert list(mb.seqs.host) == [0, 7, 12, 17, 24]
    assert mb.position_ids.tolist() == [i for n in lengths for i in range(n)]
    assert mb.seq_index.tolist() == [s for s, n in enumerate(lengths) for _ in range(n)]
    for s, (a, b) in enumerate(zip(mb.seqs.host, mb.seqs.host[1:])):
        tokens = mb.input_ids[a:b]
        assert torch.equal(mb.targets[a:b - 1], tokens[1:])  # next token, within the sequence
        prompt = [3, 3, 2, 2][s]
        mask = mb.loss_mask[a:b]
        assert mask.tolist() == [i >= prompt - 1 and i < b - a - 1 for i in range(b - a)]
    # one target per response token: counts equal the response lengths
    counts = torch.bincount(mb.seq_index[mb.loss_index], minlength=4)
    assert counts.tolist() == [4, 2, 3, 5]
    assert torch.equal(mb.loss_index, torch.nonzero(mb.loss_mask).squeeze(1))
    assert mb.pairs.chosen.tolist() == [0, 2] and mb.pairs.rejected.tolist() == [1, 3]


def test_padding_for_sequence_parallelism():
    mb = build_micro_batch([pair(0, 3, 4, 2)], pad_multiple=4)  # 7 + 5 = 12: no pad; make 13
    assert mb.num_tokens % 4 == 0
    mb = build_micro_batch([TrainingItem(0, (seq(2, 3),))], pad_multiple=4)  # 5 tokens -> 8
    assert mb.num_tokens == 8 and list(mb.seqs.host) == [0, 5, 8] and mb.num_seqs == 1
    assert not mb.loss_mask[5:].any() and mb.seq_index[5:].tolist() == [1, 1, 1]


def test_pack_keeps_pairs_together_within_budget():
    rng = np.random.default_rng(0)
    units = [pair(i, int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 9))) for i in range(30)]
    batches = pack(units, token_budget=40)
    seen = sorted(i for mb in batches for i in mb.items)
    assert seen == list(range(30))
    for mb in batches:
        assert mb.num_tokens <= 40
        for k, item in enumerate(mb.items):  # the pair's two sequences sit side by side, chosen first
            c, r = int(mb.pairs.chosen[k]), int(mb.pairs.rejected[k])
            assert r == c + 1
            assert mb.input_ids[mb.seqs.host[c]].item() == 100 * item  # chosen's tokens start at 100 * item
            assert mb.input_ids[mb.seqs.host[r]].item() == 100 * item + 50
    assert len(batches) <= int(np.ceil(sum(u.num_tokens for u in units) / 40)) + 1  # little waste


def test_a_unit_larger_than_the_budget_gets_its_own_micro_batch():
    batches = pack([pair(0, 5, 30, 30), pair(1, 1, 2, 2)], token_budget=20)
    assert sorted(len(mb.items) for mb in batches) == [1, 1]


def test_sft_units_list_every_sequence():
    mb = build_micro_batch([TrainingItem(0, (seq(2, 3),)), TrainingItem(1, (seq(1, 4),))])
    assert mb.pairs.rejected is None and mb.pairs.chosen.tolist() == [0, 1]


def test_reference_logps_travel_with_their_sequences():
    units = [TrainingItem(3, pair(3, 2, 2, 2).sequences, (-1.5, -2.5)), TrainingItem(4, pair(4, 2, 2, 2).sequences, (-3.0, -4.0))]
    assert build_micro_batch(units).ref_logps.tolist() == [-1.5, -2.5, -3.0, -4.0]


# ---- the sampler -------------------------------------------------------------------------------

def test_epoch_covers_every_item_once_across_ranks_and_drops_the_tail():
    lengths = np.arange(1, 104)  # 103 items, batches of 10: 10 steps, 3 dropped
    samplers = [GlobalBatchSampler(lengths, lengths, 10, dp_rank=r, dp_size=2, seed=7) for r in range(2)]
    assert samplers[0].steps_per_epoch == 10
    seen = []
    for _ in range(10):
        plans = [s.plan() for s in samplers]
        assert plans[0].global_items == 10 and plans[0].global_response_tokens == plans[1].global_response_tokens
        assert not set(plans[0].items) & set(plans[1].items)
        loads = [lengths[list(p.items)].sum() for p in plans]
        assert abs(loads[0] - loads[1]) <= lengths.max()  # balanced by tokens
        seen += [i for p in plans for i in p.items]
        for s in samplers:
            s.advance()
    assert len(seen) == 100 == len(set(seen))
    assert samplers[0].epoch == 1 and samplers[0].step == 0


def test_the_paper_step_count():
    s = GlobalBatchSampler(np.ones(53_175), np.ones(53_175), 32)
    assert s.steps_per_epoch == 1_661


def test_resumed_sampler_continues_exactly():
    lengths = np.random.default_rng(1).integers(1, 50, 64)
    a = GlobalBatchSampler(lengths, lengths, 8, seed=3)
    plans = []
    for _ in range(13):  # crosses an epoch boundary (8 steps per epoch)
        plans.append(a.plan())
        a.advance()
    b = GlobalBatchSampler(lengths, lengths, 8, seed=3)
    for _ in range(5):
        b.advance()
    c = GlobalBatchSampler(lengths, lengths, 8, seed=3)
    c.load_state_dict(b.state_dict())
    resumed = []
    for _ in range(8):
        resumed.append(c.plan())
        c.advance()
    assert resumed == plans[5:]
    with pytest.raises(ValueError, match="data.global_batch 8 -> 16"):
        GlobalBatchSampler(lengths, lengths, 16, seed=3).load_state_dict(b.state_dict())


def test_sampler_refuses_too_little_data():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler([1, 2], [1, 2], 32)
