"""The recompute plan of recompute="auto": the estimate, and a model that mixes full and
selective layers computing the same gradients."""

import torch
from torch.utils.checkpoint import checkpoint

from megatron_redi.model_config import preset
from megatron_redi.model import Decoder, decoder
from megatron_redi.model.memory import full_recompute_layers, layer_bytes_per_token
from megatron_redi.parallel import ParallelState, TPLayout

GB = 1e9


def test_estimate_for_qwen_1_5b_on_an_80gb_card():
    cfg = preset("qwen2.5-1.5b")
    selective, full = layer_bytes_per_token(TPLayout(cfg, 1), False, 2)
    assert (selective, full) == (58424, 6144)
    # what the H100 run saw: 27.8 GB of weights and optimizer state; 85.0 GB card
    budget = 0.9 * 85.0 * GB - 27.8 * GB - 4 * 2**30
    plan = [full_recompute_layers(TPLayout(cfg, 1), 2 * n, False, 2, budget) for n in (4096, 8192, 16384, 19000)]
    assert plan == [0, 0, 9, 12]
    assert full_recompute_layers(TPLayout(cfg, 1), 10**6, False, 2, budget) == cfg.num_layers  # nothing fits
    # TP=2 with SP halves all but the gathered GEMM inputs
    assert 0.5 * selective < layer_bytes_per_token(TPLayout(cfg, 2), True, 2)[0] < 0.6 * selective


def test_the_qk_norm_keeps_the_qkv_projection_for_its_backward():
    """Qwen3's q/k norms: the fused split (ops/qkv_rotary.py) keeps its input, the QKV GEMM's output."""
    qwen3 = preset("qwen3-4b")
    without = TPLayout(preset("qwen3-4b", architectures=["LlamaForCausalLM"], model_type="llama"), 1)
    (with_norm, full), (plain, same_full) = (layer_bytes_per_token(TPLayout(qwen3, 1), False, 2),
                                             layer_bytes_per_token(without, False, 2))
    assert with_norm - plain == 2 * (32 + 2 * 8) * 128 and full == same_full

def test_mixed_full_and_selective_layers_give_the_same_gradients(monkeypatch):
    def grads(model, **kwargs):
        torch.manual_seed(0)
        ids = torch.randint(0, 300, (24,))
        model(ids, torch.arange(24), [0, 24], **kwargs).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    torch.manual_seed(0)
    selective = Decoder(preset("tiny", vocab_size=300), ParallelState(), recompute="selective")
    torch.manual_seed(0)
    mixed = Decoder(preset("tiny", vocab_size=300), ParallelState(), recompute="auto")
    recomputed = []
    monkeypatch.setattr(decoder, "checkpoint", lambda layer, *args, **kw: recomputed.append(layer) or checkpoint(
        layer, *args, **kw))
    want, got = grads(selective), grads(mixed, full_recompute_layers=1)
    assert recomputed == [mixed.layers[0]]
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-7, msg=name)


def test_context_parallelism_divides_the_activations_and_the_plan_says_what_fits():
    """7B at 64k tokens a micro-batch (the paper's longest pairs, 2 x 32k) on 8 x 80 GB."""
    from megatron_redi.model.memory import activation_bytes, rank_plan

    cfg = preset("qwen2.5-7b")
    layout = TPLayout(cfg, 1)
    one = activation_bytes(layout, 65536, False, 2, 0)
    for cp in (2, 4, 8):
        # the rank's share of every activation, plus the gathered keys and values of the whole micro-batch
        assert 1 / cp < activation_bytes(layout, 65536 // cp, False, 2, 0, cp) / one < 1.15 / cp
    plans = {(p["tp"], p["cp"]): p for p in (rank_plan(cfg, tp, cp, 8 // (tp * cp), 65536, 80e9)
                                              for tp, cp in ((1, 1), (1, 8), (2, 4), (4, 2)))}
    assert not plans[1, 1]["fits"] and plans[1, 1]["full_recompute_layers"] == cfg.num_layers
    assert plans[1, 8]["fits"] and plans[2, 4]["fits"] and plans[4, 2]["fits"]
    assert plans[4, 2]["full_recompute_layers"] < plans[2, 4]["full_recompute_layers"] < plans[1, 8]["full_recompute_layers"]
