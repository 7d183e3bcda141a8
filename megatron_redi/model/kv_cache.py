"""The key/value cache of batched generation.

Per layer, ``k, v [B, max_len, nkv_local, hd]`` for B sequences. Generation runs the model in two
modes: *prefill* (the prompts, packed as in training; each sequence's keys and values are stored
from position 0) and *decode* (one new token per sequence: its key and value are written at the
sequence's current length, and its query attends to the cached positions before it). In decode
mode the batch is a packed micro-batch of B one-token sequences, so the model needs no other
input format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class KVCache:
    def __init__(self, num_layers: int, batch: int, max_len: int, kv_heads: int, head_dim: int, dtype, device):
        shape = (batch, max_len, kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = [0] * batch  # host copy: tokens cached per sequence
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)  # the same, on the device
        self.max_len = max_len
        self.decoding = False

    def store_prefill(self, layer: int, k, v, offsets: tuple[int, ...]):
        """k, v [t, nkv, hd] of packed prompts with boundaries ``offsets``."""
        for b, (start, end) in enumerate(zip(offsets, offsets[1:])):
            self.k[layer][b, :end - start] = k[start:end]
            self.v[layer][b, :end - start] = v[start:end]

    def attend(self, layer: int, q, k, v):
        """Decode: q [B, nh, hd], k, v [B, nkv, hd] of the new tokens -> attention output [B, nh, hd]."""
        batch, pos = torch.arange(q.shape[0], device=q.device), self.positions
        self.k[layer][batch, pos] = k
        self.v[layer][batch, pos] = v
        span = max(self.lengths) + 1
        keys = self.k[layer][:, :span].transpose(1, 2)  # [B, nkv, span, hd]
        values = self.v[layer][:, :span].transpose(1, 2)
        mask = torch.arange(span, device=q.device)[None, :] <= pos[:, None]  # [B, span]
        out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :],
                                             enable_gqa=True)
        return out.squeeze(2)

    def advance(self, counts):
        """Record that each sequence grew by counts[b] tokens (one host-to-device copy per step,
        shared by every layer)."""
        self.lengths = [n + c for n, c in zip(self.lengths, counts)]
        self.positions = torch.tensor(self.lengths, device=self.positions.device)
