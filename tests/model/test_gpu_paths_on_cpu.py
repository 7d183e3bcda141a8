"""The CUDA-only choices of attention and generation, forced on CPU: which attention a dtype gets,
how many KV-cache slots the device's memory holds, the decode step's grouped-query attention."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from multirank import run_ranks

from megatron_redi.model import attention, kv_cache

CUDA = torch.device("cuda")


@pytest.fixture
def varlen_present(monkeypatch):
    """As if torch.nn.attention.varlen were importable with CUDA (the choice, not the kernel)."""
    monkeypatch.setattr(attention, "_varlen_attn", lambda *a, **k: pytest.fail("no varlen kernel here"))


@pytest.mark.parametrize("dtype,expected", [(torch.bfloat16, "varlen"), (torch.float16, "varlen"),
                                            (torch.float32, "sdpa")])
def test_auto_attention_takes_varlen_only_for_flash_attention_s_types(varlen_present, dtype, expected):
    q = SimpleNamespace(device=CUDA, dtype=dtype)
    assert attention._resolve("auto", q, 64) == expected  # a packed micro-batch of many sequences
    assert attention._resolve("auto", q, 2, 0) == expected  # context parallelism's chunks
    assert attention._resolve("auto", SimpleNamespace(device=torch.device("cpu"), dtype=dtype), 64) == "sdpa"


def test_varlen_asked_for_fp32_is_refused_naming_the_dtype(varlen_present):
    q = torch.zeros(4, 2, 8)
    with pytest.raises(RuntimeError, match="fp16 or bf16 tensors; got torch.float32 on cpu"):
        attention.attention_varlen(q, q, q, None)


@pytest.fixture
def model(tiny_checkpoint):
    from megatron_redi.model import from_pretrained

    return from_pretrained(tiny_checkpoint(num_kv_heads=2))


def _slot_bytes(model, max_len):
    cfg = model.layout.cfg
    return 2 * cfg.num_layers * max_len * model.layout.kv_heads_local * cfg.head_dim * 4  # fp32


def test_kv_cache_slots_follow_the_free_memory_and_generations_do_not_change(model, monkeypatch, capsys):
    from megatron_redi.eval.generate import generate_samples

    prompts = [[5, 9, 13, 2], [7, 3], [11, 12, 13, 14, 15, 16, 17]] * 3
    want = generate_samples(model, prompts, 2, 12, set(), 1.0, 0.9, seed=5, batch_size=8)
    max_len = 7 + 12
    monkeypatch.setattr(kv_cache, "free_memory", lambda device: int(2.5 * _slot_bytes(model, max_len) / 0.8))
    built = []
    monkeypatch.setattr(kv_cache.KVCache, "__init__", lambda self, m, batch, n, init=kv_cache.KVCache.__init__:
                        built.append(batch) or init(self, m, batch, n))
    got = generate_samples(model, prompts, 2, 12, set(), 1.0, 0.9, seed=5, batch_size=8)
    assert got == want and built == [2]
    err = capsys.readouterr().err
    assert f"KV cache: 2 slots of {max_len} positions" in err and "instead of the batch size 8" in err
    assert kv_cache.slots_that_fit(model, 1, max_len) == 1  # enough for what is asked: nothing said
    assert capsys.readouterr().err == ""


def test_a_kv_cache_slot_larger_than_the_free_memory_is_a_clear_error(model, monkeypatch):
    monkeypatch.setattr(kv_cache, "free_memory", lambda device: 1000)
    with pytest.raises(MemoryError, match="KV cache of one generation of 4096 positions needs .* GiB and 0.00 GiB"):
        kv_cache.slots_that_fit(model, 8, 4096)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 2), (4, 1)])
def test_decode_attention_grouped_by_kv_head_equals_gqa_expansion(heads, kv_heads):
    torch.manual_seed(0)
    batch, span, hd = 3, 11, 8
    cache = kv_cache.KVCache.__new__(kv_cache.KVCache)  # the decode path needs only these
    cache.k, cache.v = [torch.randn(batch, 16, kv_heads, hd)], [torch.randn(batch, 16, kv_heads, hd)]
    cache.lengths, cache.positions, cache._filling = [4, span - 1, 0], torch.tensor([4, span - 1, 0]), None
    q, k, v = torch.randn(batch, heads, hd), torch.randn(batch, kv_heads, hd), torch.randn(batch, kv_heads, hd)
    out = cache.attend(0, q, k, v, None, "auto")
    keys, values = cache.k[0][:, :span].transpose(1, 2), cache.v[0][:, :span].transpose(1, 2)
    mask = torch.arange(span)[None, :] <= cache.positions[:, None]
    want = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :],
                                          enable_gqa=True).squeeze(2)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def _tp_ranks_agree_on_the_slots(path):
    from megatron_redi.model import from_pretrained
    from megatron_redi.parallel import initialize

    model = from_pretrained(path, initialize(tensor_parallel_size=2))
    per_slot = _slot_bytes(model, 100)
    kv_cache.free_memory = lambda device: int((3 if model.parallel.tp_rank == 0 else 1) * per_slot / 0.8)
    assert kv_cache.slots_that_fit(model, 8, 100) == 1  # the ranks run one batch: the smallest fits all


def test_tp_ranks_with_different_free_memory_agree_on_the_slots(tiny_checkpoint):
    run_ranks(2, _tp_ranks_agree_on_the_slots, tiny_checkpoint(num_kv_heads=2))


def test_a_model_built_on_the_meta_device_allocates_and_initialises_nothing():
    """from_pretrained builds on meta, then fills: not a random model on the GPU first (twice the
    weights' memory at the peak, and the time of initialising them)."""
    from megatron_redi.model import Decoder
    from megatron_redi.model_config import preset
    from megatron_redi.parallel import ParallelState

    model = Decoder(preset("tiny"), ParallelState(), device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert not any(p.is_meta for p in Decoder(preset("tiny"), ParallelState()).parameters())
