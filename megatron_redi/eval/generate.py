"""Batched sampling from the project's own model, with a KV cache, under tensor parallelism.

Continuous batching: ``batch_size`` slots (fewer where the device's memory holds fewer) share one
KV cache; a job (one sample of one prompt) that stops frees its slot, which the next job's prompt
fills at once (a prefill into that slot alone), so the batch stays full while reasoning traces of a
few hundred and of 32,768 tokens run side by side. ``refill=False`` waits until every slot is free before filling them again: the static
batching of before, kept to measure what continuous batching buys (tools/benchmark_generation.py).

Each job draws its randomness from its own generator, seeded by (seed, prompt id, sample index),
one uniform per token, so that a generation does not depend on the batch size, the order of the
jobs or which other jobs share its batch. Sampling is greedy at temperature 0, else temperature and
nucleus (top-p) sampling by the inverse of the kept tokens' cumulative distribution.

Every TP rank runs the same batch; the logits are gathered over TP, and the sampled tokens are
broadcast from TP rank 0 so that the ranks can never diverge. The model runs through the KV
cache's protocol (model/kv_cache.py), without sequence parallelism.
"""

from __future__ import annotations

from collections import deque

import torch

from ..model.kv_cache import KVCache, last_token_logits, slots_that_fit
from ..parallel.collectives import broadcast


def sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor | None) -> torch.Tensor:
    """logits [B, V] fp32, one uniform in [0, 1) per row -> token ids [B]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    order = None
    if top_p < 1.0:  # the smallest set of most likely tokens reaching top_p (sorting only then)
        probs, order = probs.sort(dim=-1, descending=True)
        probs = probs * (probs.cumsum(-1) - probs < top_p)
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    return (index if order is None else order.gather(-1, index)).squeeze(-1)


def new_token_limits(model, prompts: list[list[int]], max_new_tokens: int) -> list[int]:
    """How many tokens each prompt may be followed by: ``max_new_tokens``, or fewer where the
    model's positions (``max_position_embeddings``) end first; at least one (a prompt that fills
    the positions by itself is its caller's to refuse, as evaluate does)."""
    return [max(1, min(max_new_tokens, model.cfg.max_position_embeddings - len(p))) for p in prompts]


def job_generator(seed: int, prompt_id: int, sample_index: int) -> torch.Generator:
    """The randomness of one generation, whatever else is generated beside it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + prompt_id) * 1_009 + sample_index)


def _broadcast_tp(tokens, parallel):
    return broadcast(parallel, tokens, parallel.rank - parallel.tp_rank, parallel.tp_group)


@torch.no_grad()
def generate_samples(model, prompts: list[list[int]], samples: int, max_new_tokens: int, stop_ids: set[int],
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 32,
                     prompt_ids: list[int] | None = None, refill: bool = True, on_done=None) -> list[list[list[int]]]:
    """``samples`` generations of each prompt: ``out[i][j]``, sample j of prompt i, its token ids
    (the prompt excluded), cut after the first stop token, or at ``max_new_tokens``, or where the
    model's positions end (``new_token_limits``). ``prompt_ids``: the prompts' identities
    for the seeds (default 0, 1, ...; the evaluator passes the problems' indices in the benchmark,
    so that data parallelism does not change them). ``on_done(new_tokens)`` is called as each
    generation ends (a progress bar's hook)."""
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else prompt_ids
    queue = deque((i, j) for i in range(len(prompts)) for j in range(samples))
    out = [[None] * samples for _ in prompts]
    if not queue:
        return out
    limits = new_token_limits(model, prompts, max_new_tokens)
    max_len = max(len(p) + n for p, n in zip(prompts, limits))
    slots = slots_that_fit(model, min(batch_size, len(queue)), max_len)
    cache = KVCache(model, slots, max_len)
    running: list[tuple[int, int] | None] = [None] * slots
    texts: list[list[int]] = [[] for _ in range(slots)]
    generators: list[torch.Generator | None] = [None] * slots
    logits = torch.zeros(slots, model.cfg.vocab_size, dtype=torch.float32, device=model.parallel.device)
    while True:
        free = [s for s in range(slots) if running[s] is None]
        if queue and free and (refill or len(free) == slots):
            filled = free[:len(queue)]
            for s in filled:
                running[s], texts[s] = queue.popleft(), []
                generators[s] = job_generator(seed, prompt_ids[running[s][0]], running[s][1])
            logits[filled] = cache.prefill([prompts[running[s][0]] for s in filled], filled).float()
        active = [s for s in range(slots) if running[s] is not None]
        if not active:
            return out
        uniforms = None
        if temperature > 0:  # free slots draw nothing: their generators are the next jobs' own
            uniforms = torch.cat([torch.rand(1, generator=generators[s]) if running[s] is not None else torch.zeros(1)
                                  for s in range(slots)])
        tokens = _broadcast_tp(sample(logits, temperature, top_p, uniforms), model.parallel)
        for s, t in zip(active, tokens[active].tolist()):
            texts[s].append(t)
            if t in stop_ids or len(texts[s]) >= limits[running[s][0]]:
                i, j = running[s]
                out[i][j], running[s] = texts[s], None
                if on_done:
                    on_done(len(texts[s]))
        going = [job is not None for job in running]
        if any(going):
            logits = cache.decode(tokens, going).float()


def generate(model, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int], temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, use_cache: bool = True, batch_size: int = 32) -> list[list[int]]:
    """One generation of each prompt (``generate_samples`` with one sample). ``use_cache=False``
    recomputes the whole sequence for every token: the reference the cache is tested against."""
    if use_cache:
        return [s[0] for s in generate_samples(model, prompts, 1, max_new_tokens, stop_ids, temperature, top_p, seed,
                                               batch_size)]
    out = []
    for i, (prompt, limit) in enumerate(zip(prompts, new_token_limits(model, prompts, max_new_tokens))):
        generator, text = job_generator(seed, i, 0), []
        for _ in range(limit):
            logits = last_token_logits(model, [prompt + text]).float()
            uniform = torch.rand((1,), generator=generator) if temperature > 0 else None
            text.append(int(_broadcast_tp(sample(logits, temperature, top_p, uniform), model.parallel)[0]))
            if text[-1] in stop_ids:
                break
        out.append(text)
    return out
