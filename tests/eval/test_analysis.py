"""The analyses' computations against direct ones: word counts, length statistics, per-token
log-probs and entropies (packing and chunking change nothing), per-id means and Pearson's r."""

import math

import numpy as np
import pytest
import torch

from megatron_redi.eval.analysis import count_word, generation_statistics, pearson, token_statistics, token_type_logprobs
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize


def test_reflection_words_are_whole_words_in_any_case():
    assert count_word("Wait, wait... WAIT. awaited, waiting", "wait") == 3
    assert count_word("no reflection", "wait") == 0


def test_generation_statistics():
    results = [{"generations": ["Wait, 2. wait 3", "4"], "lengths": [10, 2]}, {"generations": ["wait"], "lengths": [4]}]
    s = generation_statistics(results, ["wait"])
    assert s == {"generations": 3, "mean_tokens": pytest.approx(16 / 3), "mean_wait": 1.0,
                 "wait_per_1k_tokens": pytest.approx(1000 * 3 / 16)}
    with pytest.raises(ValueError, match="without generation lengths"):
        generation_statistics([{"generations": ["x"]}])


def test_token_statistics_equal_a_direct_computation(tiny_checkpoint):
    model = from_pretrained(tiny_checkpoint(), initialize(tensor_parallel_size=1)).eval()
    gen = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, 384, (n,), generator=gen).tolist() for n in (9, 23, 5, 40)]
    starts = [3, 1, 4, 20]
    expected = []
    with torch.no_grad():
        for seq, start in zip(sequences, starts):
            logits = model(torch.tensor(seq), torch.arange(len(seq)), [0, len(seq)], return_logits=True,
                           sequence_parallel=False)
            logp = torch.log_softmax(logits.double(), -1)[start - 1:-1]
            expected.append((logp.gather(1, torch.tensor(seq[start:])[:, None]).squeeze(1).numpy(),
                             -(logp.exp() * logp).sum(-1).numpy()))
    for max_tokens, chunk in ((4096, 2048), (30, 7), (1, 1)):  # one pack; several packs and chunks; one each
        got = token_statistics(model, sequences, starts, max_tokens=max_tokens, chunk=chunk)
        for (lp, h), (elp, eh) in zip(got, expected):
            assert len(lp) == len(elp) and np.allclose(lp, elp, atol=1e-5) and np.allclose(h, eh, atol=1e-5)
    assert all(0 < h.min() and h.max() <= math.log(384) for _, h in got)
    with pytest.raises(ValueError, match="start must lie inside"):
        token_statistics(model, [[1, 2]], [2])


def test_token_type_means_and_pearson():
    vocab, counts, mean = token_type_logprobs([np.array([5, 7, 5]), np.array([7, 9])],
                                              [np.array([-1.0, -2.0, -3.0]), np.array([-4.0, -0.5])])
    assert vocab.tolist() == [5, 7, 9] and counts.tolist() == [2, 2, 1] and mean.tolist() == [-2.0, -3.0, -0.5]
    assert pearson(np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert pearson(np.array([1.0, 2]), np.array([1.0, 2])) is None and pearson(np.ones(4), np.arange(4.0)) is None
