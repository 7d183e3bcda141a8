"""The key/value cache of batched generation, and the protocol that drives the model with it.

Per layer, ``k, v [B, max_len, nkv_local, hd]`` for B slots, each holding one sequence. Generation
runs the model in two modes, and only this class moves between them:

    prefill(prompts, slots)   the prompts, packed as in training, into the given slots (any, while
                              the others are mid-generation: continuous batching); each layer
                              attends within each prompt and stores its keys and values from
                              position 0. Returns the logits of each prompt's last token.
    decode(tokens, advance)   one new token per slot, packed as B one-token sequences; each layer
                              writes the token's key and value at the slot's current length and
                              attends over the cached positions before it. Returns the next
                              logits. Slots not to ``advance`` (free ones) keep their length.

The model calls ``attend`` from each attention layer and knows nothing else of the cache. The
lengths live twice, on the host (for slicing) and on the device (the decode positions), updated
together once per forward.

Every slot is allocated at the full length up front (no reallocation mid-generation), so on a GPU
the number of slots is bounded by the memory free when generation starts (``slots_that_fit``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..batch import SeqBoundaries
from ..parallel.collectives import all_reduce
from .attention import causal_attention

# The cache's share of the memory free when generation starts; the rest is left to the prefill's
# activations and the logits.
CACHE_SHARE_OF_FREE = 0.8


def free_memory(device: torch.device) -> int | None:
    """Bytes a new tensor can take on ``device``: the driver's free memory plus the blocks PyTorch's
    allocator holds unused. None on the CPU (not bounded here)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def slots_that_fit(model, wanted: int, max_len: int) -> int:
    """How many of ``wanted`` slots of ``max_len`` positions the device's free memory holds (the
    smallest answer over the TP group, whose ranks must run the same batch); says so when fewer."""
    layout = model.layout
    per_slot = (2 * layout.cfg.num_layers * max_len * layout.kv_heads_local * layout.cfg.head_dim
                * model.head_weight.element_size())
    free = free_memory(model.parallel.device)
    if free is None:
        return wanted
    fits = torch.tensor([min(wanted, int(free * CACHE_SHARE_OF_FREE) // per_slot)], device=model.parallel.device)
    all_reduce(model.parallel, fits, model.parallel.tp_group, "min")
    fits = int(fits.item())
    if fits < 1:
        raise MemoryError(f"the KV cache of one generation of {max_len} positions needs {per_slot / 2**30:.2f} GiB "
                          f"and {free / 2**30:.2f} GiB is free on {model.parallel.device}: lower the "
                          f"maximum new tokens or use more tensor parallelism")
    if fits < wanted:
        print(f"KV cache: {fits} slots of {max_len} positions ({fits * per_slot / 2**30:.1f} GiB, "
              f"{CACHE_SHARE_OF_FREE:.0%} of the {free / 2**30:.1f} GiB free) instead of the batch size {wanted}",
              file=sys.stderr, flush=True)
    return fits


def packed_hidden(model, sequences: list[list[int]], cache: KVCache | None = None):
    """Run token sequences through ``model`` packed, without sequence parallelism: (final hidden
    states [t, h] of every position, their SeqBoundaries)."""
    device = model.parallel.device
    seqs = SeqBoundaries.from_lengths([len(x) for x in sequences], device)
    ids = torch.tensor([t for x in sequences for t in x], device=device)
    pos = torch.cat([torch.arange(n, device=device) for n in seqs.lengths])
    return model(ids, pos, seqs, cache=cache, sequence_parallel=False), seqs


def last_token_logits(model, sequences: list[list[int]], cache: KVCache | None = None) -> torch.Tensor:
    """The logits of each packed sequence's last position [B, V]."""
    hidden, seqs = packed_hidden(model, sequences, cache)
    last = torch.tensor(seqs.host[1:], device=hidden.device) - 1
    return model.logits(hidden.index_select(0, last), sequence_parallel=False)


class KVCache:
    def __init__(self, model, batch: int, max_len: int):
        layout, device = model.layout, model.parallel.device
        shape = (batch, max_len, layout.kv_heads_local, layout.cfg.head_dim)
        dtype = model.head_weight.dtype
        self.model = model
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layout.cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layout.cfg.num_layers)]
        self.lengths = [0] * batch  # host copy: tokens cached per slot
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)  # the same, on the device
        self.max_len = max_len
        # while a prefill runs: the (slot, position) of each of its tokens (None: decoding)
        self._filling: tuple[torch.Tensor, torch.Tensor] | None = None

    def prefill(self, prompts: list[list[int]], slots: list[int] | None = None) -> torch.Tensor:
        slots = list(range(len(prompts))) if slots is None else slots
        device = self.positions.device
        self._filling = (torch.tensor([s for s, p in zip(slots, prompts) for _ in p], device=device),
                         torch.tensor([i for p in prompts for i in range(len(p))], device=device))
        try:
            logits = last_token_logits(self.model, prompts, self)
        finally:
            self._filling = None
        lengths = list(self.lengths)
        for slot, prompt in zip(slots, prompts):
            lengths[slot] = len(prompt)
        self._set_lengths(lengths)
        return logits

    def decode(self, tokens: torch.Tensor, advance: list[bool] | None = None) -> torch.Tensor:
        """tokens [B]: one new token per slot -> the logits that follow them [B, V]."""
        batch = len(self.lengths)
        hidden = self.model(tokens, self.positions, list(range(batch + 1)), cache=self, sequence_parallel=False)
        advance = [True] * batch if advance is None else advance
        self._set_lengths([n + int(a) for n, a in zip(self.lengths, advance)])
        return self.model.logits(hidden, sequence_parallel=False)

    def attend(self, layer: int, q, k, v, seqs: SeqBoundaries, backend: str):
        """q [t, nh, hd], k, v [t, nkv, hd] of the forward's tokens -> attention output [t, nh, hd]."""
        if self._filling is not None:  # the prompts: attend within each, keep their keys and values
            self.k[layer][self._filling] = k  # one scatter for every prompt of the prefill
            self.v[layer][self._filling] = v
            return causal_attention(q, k, v, seqs, backend)
        batch, pos = torch.arange(q.shape[0], device=q.device), self.positions
        self.k[layer][batch, pos] = k
        self.v[layer][batch, pos] = v
        span = max(self.lengths) + 1
        keys = self.k[layer][:, :span].transpose(1, 2)  # [B, nkv, span, hd]
        values = self.v[layer][:, :span].transpose(1, 2)
        mask = torch.arange(span, device=q.device)[None, :] <= pos[:, None]  # [B, span]
        # The query heads of one KV head, as that head's queries: no K/V expanded to every query head
        # (SDPA's GQA with a mask is its math kernel's, which expands and upcasts them each layer).
        nkv, hd = keys.shape[1], keys.shape[3]
        grouped = q.reshape(q.shape[0], nkv, q.shape[1] // nkv, hd)  # head i belongs to KV head i // group
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask[:, None, None, :])
        return out.reshape(q.shape)

    def _set_lengths(self, lengths: list[int]):
        """The tokens each slot holds now (one host-to-device copy per forward, shared by every layer)."""
        self.lengths = lengths
        self.positions = torch.tensor(lengths, device=self.positions.device)
