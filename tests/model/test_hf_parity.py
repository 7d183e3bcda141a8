"""Our packed forward against transformers run on each sequence alone (fp32, CPU)."""

import pytest
import torch

from megatron_redi.model import from_pretrained

LENGTHS = [7, 19, 12]  # three sequences of different lengths, packed


def _packed_batch(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (sum(LENGTHS),), generator=g)
    pos = torch.cat([torch.arange(n) for n in LENGTHS])
    offsets = [0]
    for n in LENGTHS:
        offsets.append(offsets[-1] + n)
    return ids, pos, offsets


@pytest.mark.parametrize("arch,tie,kv", [("qwen2", True, 2), ("qwen2", False, 2), ("qwen2", True, 1),
                                         ("qwen2", False, 4), ("llama3", False, 2), ("llama3", True, 1),
                                         ("qwen3", True, 2), ("qwen3", False, 1)])
@pytest.mark.parametrize("recompute", ["none", "full"])
def test_logits_match_transformers(tiny_checkpoint, arch, tie, kv, recompute):
    from transformers import AutoModelForCausalLM

    path = tiny_checkpoint(arch=arch, tie_word_embeddings=tie, num_kv_heads=kv)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ours = from_pretrained(path, recompute=recompute)
    ids, pos, offsets = _packed_batch(ours.cfg.vocab_size)
    with torch.no_grad():
        logits = ours(ids, pos, offsets, return_logits=True)
        expected = torch.cat([hf(ids[a:b][None]).logits[0] for a, b in zip(offsets, offsets[1:])])
    assert logits.dtype == torch.float32 and logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_no_attention_across_sequence_boundaries(tiny_checkpoint):
    """Changing the first sequence leaves the logits of the others untouched."""
    model = from_pretrained(tiny_checkpoint())
    ids, pos, offsets = _packed_batch(model.cfg.vocab_size)
    other = ids.clone()
    other[: LENGTHS[0]] = (other[: LENGTHS[0]] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        a, b = model(ids, pos, offsets, return_logits=True), model(other, pos, offsets, return_logits=True)
    assert not torch.allclose(a[: LENGTHS[0]], b[: LENGTHS[0]])
    assert torch.equal(a[LENGTHS[0]:], b[LENGTHS[0]:])


def test_recompute_modes_give_identical_gradients(tiny_checkpoint):
    path = tiny_checkpoint()
    ids, pos, offsets = _packed_batch(384)
    grads = {}
    for mode in ("none", "selective", "full"):
        model = from_pretrained(path, recompute=mode)
        model(ids, pos, offsets, return_logits=True).logsumexp(-1).sum().backward()
        grads[mode] = [p.grad for p in model.parameters()]
    for mode in ("selective", "full"):  # selective computes the same gradients in another order
        for a, b in zip(grads["none"], grads[mode]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_forward_tracks_fp32(tiny_checkpoint):
    path = tiny_checkpoint()
    ids, pos, offsets = _packed_batch(384)
    with torch.no_grad():
        fp32 = from_pretrained(path)(ids, pos, offsets, return_logits=True)
        bf16 = from_pretrained(path, dtype=torch.bfloat16)(ids, pos, offsets, return_logits=True)
    assert bf16.dtype == torch.float32  # logits are always returned in fp32
    rel = (bf16 - fp32).norm() / fp32.norm()
    assert rel < 3e-2, rel
