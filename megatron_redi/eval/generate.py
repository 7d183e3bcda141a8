"""Batched sampling from the project's own model, with a KV cache, under tensor parallelism.

Every TP rank runs the same batch; the logits are gathered over TP, and the sampled tokens are
broadcast from TP rank 0 so that the ranks can never diverge. The model runs through the KV
cache's protocol (model/kv_cache.py: prefill, then one decode step per token), without sequence
parallelism. Sampling: greedy at temperature 0, else temperature and nucleus (top-p) sampling from
a seeded generator.
"""

from __future__ import annotations

import torch

from ..model.kv_cache import KVCache, last_token_logits
from ..parallel.collectives import broadcast


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """logits [B, V] fp32 -> token ids [B]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # the smallest set reaching top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _broadcast_tp(tokens, parallel):
    return broadcast(parallel, tokens, parallel.rank - parallel.tp_rank, parallel.tp_group)


@torch.no_grad()
def generate(model, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int], temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, use_cache: bool = True, batch_size: int = 32,
             on_batch=None) -> list[list[int]]:
    """The generated token ids of each prompt (prompt excluded), cut after the first stop token.
    ``on_batch(prompts, tokens)`` is called after each batch (a progress bar's hook)."""
    generator = torch.Generator(device=model.parallel.device).manual_seed(seed)
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = _generate_batch(model, prompts[start:start + batch_size], max_new_tokens, stop_ids,
                                temperature, top_p, generator, use_cache)
        outputs += batch
        if on_batch:
            on_batch(len(batch), sum(map(len, batch)))
    return outputs


def _generate_batch(model, prompts, max_new_tokens, stop_ids, temperature, top_p, generator, use_cache):
    batch = len(prompts)
    cache = KVCache(model, batch, max(map(len, prompts)) + max_new_tokens) if use_cache else None
    logits = cache.prefill(prompts) if cache is not None else last_token_logits(model, prompts)
    out, done = [[] for _ in prompts], [False] * batch
    for step in range(max_new_tokens):
        tokens = _broadcast_tp(sample(logits, temperature, top_p, generator), model.parallel)
        for b, t in enumerate(tokens.tolist()):
            if not done[b]:
                out[b].append(t)
                done[b] = t in stop_ids
        if all(done) or step == max_new_tokens - 1:
            break
        if cache is None:  # recompute everything: the reference the cache is tested against
            logits = last_token_logits(model, [p + o for p, o in zip(prompts, out)])
        else:
            logits = cache.decode(tokens)
    return out
