"""The decoder of every model family (families.py: Qwen2, Llama-3, Qwen3 are one network with a
few parts switched by the config), tensor- and sequence-parallel, over packed micro-batches.

Notation, used in every shape comment of the model:
    t       tokens of the packed micro-batch (all its sequences, concatenated); under context
            parallelism (CP) the rank's rows of it, two chunks of every sequence (parallel/context.py)
    t/tp    the rank's contiguous share of them under sequence parallelism (SP)
    h       hidden size; f MLP width; hd head dim
    nh, nkv query and key/value heads; *_local: the rank's share under tensor parallelism (TP)

Parallel plan (one row per linear; "column" splits outputs, "row" splits inputs):

    attn.qkv      column   fused [q heads of group g, k_g, v_g] per local KV group
    attn.out      row
    mlp.gate_up   column   fused [gate_local; up_local]
    mlp.down      row
    embed         vocab-parallel rows
    lm head       vocab-parallel rows (the embedding itself when tied)
    norms         replicated; under SP each rank sees only its tokens, so their gradients are
                  summed over TP (``sync_replicated_grads``)
    attn.q_norm   replicated (Qwen3's per-head norms of queries and keys, before RoPE): each rank
    attn.k_norm   normalises only its own heads, so their gradients are summed over TP, SP or not

Activation recompute: ``none`` keeps every intermediate; ``selective`` keeps GEMM outputs and
recomputes the norms' and SwiGLU's elementwise work in the backward (no GEMM is recomputed);
``full`` recomputes each whole layer; ``auto`` is selective, with as many leading layers
recomputed in full as the micro-batch needs to fit the GPU (memory.py; selective on CPU).

The residual stream is ``[t, h]`` without SP and ``[t/tp, h]`` with it; the column-parallel
layers gather tokens on entry and the row-parallel ones reduce-scatter on exit. When TP exceeds
nkv, each KV head is replicated on the tp/nkv ranks whose query heads use it, and marked so that
the gradients of its copies are summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..batch import SeqBoundaries
from ..model_config import ModelConfig
from ..ops.qkv_rotary import split_qkv_rotary
from ..ops.rms_norm import rms_norm, rms_norm_reference
from ..ops.swiglu import swiglu_linear, swiglu_linear_reference
from ..parallel import (ColumnParallelLinear, ParallelState, RowParallelLinear, TPLayout,
                        VocabParallelEmbedding, mark_replicated)
from ..parallel.mappings import copy_to_tp, gather_last_dim, gather_tokens
from ..parallel.context import ContextShard
from .attention import causal_attention, context_attention
from .kv_cache import KVCache
from . import memory
from .rope import RotaryEmbedding

RECOMPUTE_MODES = ("none", "selective", "full", "auto")


@dataclass(frozen=True)
class ForwardInputs:
    """What every layer of one forward shares."""

    cos: torch.Tensor  # [t, hd], the RoPE angles of each token
    sin: torch.Tensor
    seqs: SeqBoundaries
    attention_backend: str
    sequence_parallel: bool  # the residual stream sharded along tokens (never while generating)
    cache: KVCache | None = None  # generating: keys and values of earlier positions
    context: ContextShard | None = None  # context parallelism: this rank's share of the tokens
    cp_group: object = None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype, recompute_elementwise: bool = False):
        super().__init__()
        self.eps, self.recompute_elementwise = eps, recompute_elementwise
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x, delta=None):
        """``(h, norm(h))``, h = x + delta: the residual stream with a branch added, and its norm."""
        return (rms_norm if self.recompute_elementwise else rms_norm_reference)(x, self.weight, self.eps, delta)


class HeadNorm(nn.Module):
    """The RMSNorm of every query (or key) head: ``head_dim`` weights shared by the heads."""

    def __init__(self, dim: int, dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))


class Attention(nn.Module):
    def __init__(self, layout: TPLayout, parallel: ParallelState, dtype, layer_idx: int):
        super().__init__()
        cfg = layout.cfg
        self.layer_idx = layer_idx
        self.head_dim, self.eps = cfg.head_dim, cfg.rms_norm_eps
        self.heads_local, self.kv_heads_local = layout.heads_local, layout.kv_heads_local
        self.queries_per_group = layout.queries_per_group
        self.qkv = ColumnParallelLinear(cfg.hidden_size, layout.qkv_rows_local * layout.tp, parallel,
                                        bias=cfg.qkv_bias, dtype=dtype)
        self.q_norm = self.k_norm = None
        if cfg.qk_norm:
            self.q_norm, self.k_norm = HeadNorm(cfg.head_dim, dtype), HeadNorm(cfg.head_dim, dtype)
            for norm in (self.q_norm, self.k_norm):
                mark_replicated(norm, "weight", parallel.tp_group)
        self.out = RowParallelLinear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, parallel, dtype=dtype)
        if layout.kv_replicas > 1:  # k, v rows (after the query heads' rows) are replicas
            group = parallel.tp_subgroup(layout.kv_replicas)
            kv_rows = slice(self.heads_local * cfg.head_dim, None)
            for name in ("weight", "bias") if cfg.qkv_bias else ("weight",):
                mark_replicated(self.qkv, name, group, kv_rows)

    def forward(self, x, p: ForwardInputs):
        qkv = self.qkv(x, p.sequence_parallel)  # [t, (nh_local + 2 nkv_local) hd]
        t = qkv.shape[0]
        qkv = qkv.view(t, self.kv_heads_local, self.queries_per_group + 2, self.head_dim)
        norms = (self.q_norm.weight, self.k_norm.weight, self.eps) if self.q_norm is not None else None
        q, k, v = split_qkv_rotary(qkv, p.cos, p.sin, norms)  # [t, nh_local, hd], [t, nkv_local, hd] x 2
        if p.cache is not None:
            o = p.cache.attend(self.layer_idx, q, k, v, p.seqs, p.attention_backend)
        elif p.context is not None:
            o = context_attention(q, k, v, p.context, p.cp_group, p.attention_backend)
        else:
            o = causal_attention(q, k, v, p.seqs, p.attention_backend)  # [t, nh_local, hd]
        return self.out(o.reshape(t, self.heads_local * self.head_dim), p.sequence_parallel)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, parallel: ParallelState, dtype, recompute_elementwise: bool):
        super().__init__()
        self.recompute_elementwise = recompute_elementwise
        self.gate_up = ColumnParallelLinear(cfg.hidden_size, 2 * cfg.intermediate_size, parallel, dtype=dtype)
        self.down = RowParallelLinear(cfg.intermediate_size, cfg.hidden_size, parallel, dtype=dtype)

    def forward(self, x, sequence_parallel: bool):
        gate_up = self.gate_up(x, sequence_parallel)  # [t, 2 f_local]: [gate | up]
        fused = swiglu_linear if self.recompute_elementwise else swiglu_linear_reference
        return self.down.reduce_output(fused(gate_up, self.down.weight), sequence_parallel)


class DecoderLayer(nn.Module):
    """Pre-norm residual block. ``recompute_elementwise`` (selective recompute): the norms and the SwiGLU keep
    only their inputs and recompute the rest in the backward (ops/rms_norm.py, ops/swiglu.py)."""

    def __init__(self, layout: TPLayout, parallel: ParallelState, dtype, layer_idx: int, recompute_elementwise: bool):
        super().__init__()
        cfg = layout.cfg
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, recompute_elementwise)
        self.attn = Attention(layout, parallel, dtype, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, recompute_elementwise)
        self.mlp = MLP(cfg, parallel, dtype, recompute_elementwise)

    def forward(self, x, delta, p: ForwardInputs):
        """x + delta is the residual stream entering the layer (delta: the previous layer's MLP
        output, None for the first layer); returns the same pair for the next layer. Each residual
        add happens inside the norm that follows it, one pass over the stream instead of two."""
        x, y = self.attn_norm(x, delta)
        x, y = self.mlp_norm(x, self.attn(y, p))
        return x, self.mlp(y, p.sequence_parallel)


class Decoder(nn.Module):
    """Decoder-only LM of any family of families.py. ``forward`` returns final hidden states (sharded along tokens under SP),
    or, with ``return_logits=True``, fp32 logits over the full vocabulary, for inspection."""

    def __init__(self, cfg: ModelConfig, parallel: ParallelState, dtype=torch.float32,
                 recompute: str = "none", attention_backend: str = "auto", device=None):
        super().__init__()
        if recompute not in RECOMPUTE_MODES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {recompute!r}")
        self.cfg, self.parallel = cfg, parallel
        self.layout = TPLayout(cfg, parallel.tp_size)  # refuses a TP size the model cannot be split over
        assert cfg.family.mlp == "swiglu", cfg.family.mlp  # the one MLP kind (families.MLP_MATRICES)
        self.recompute, self.attention_backend = recompute, attention_backend
        with torch.device(device if device is not None else parallel.device):
            self.embed = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, parallel, dtype=dtype)
            recompute_elementwise = recompute in ("selective", "auto")
            self.layers = nn.ModuleList(DecoderLayer(self.layout, parallel, dtype, i, recompute_elementwise) for i in range(cfg.num_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, recompute_elementwise)
            self.lm_head = None if cfg.tie_word_embeddings else VocabParallelEmbedding(
                cfg.vocab_size, cfg.hidden_size, parallel, dtype=dtype)  # used for its weight only
        self.rope = RotaryEmbedding(cfg)
        if parallel.sequence_parallel:
            for module in self.modules():
                if isinstance(module, RMSNorm):
                    mark_replicated(module, "weight", parallel.tp_group)

    @property
    def head_weight(self) -> torch.Tensor:
        """The rank's vocab shard of the LM head, ``[V/tp, h]``."""
        return (self.embed if self.lm_head is None else self.lm_head).weight

    def forward(self, input_ids, position_ids, cu_seqlens, return_logits: bool = False, cache=None,
                sequence_parallel: bool | None = None, context: ContextShard | None = None,
                full_recompute_layers: int | None = None):
        """input_ids, position_ids: [t] (every rank holds all t, also under SP and CP);
        cu_seqlens: a SeqBoundaries, or host offsets [N+1]; cache: a KVCache when generating;
        sequence_parallel: shard the residual stream along tokens (by default as the ParallelState
        says, and never with a cache: a decode step has one token per sequence); context: this
        CP rank's share of the micro-batch (parallel/context.py), which the forward then runs on
        alone: the hidden states returned are of its rows. Without one, every CP rank runs the
        whole micro-batch (generation), which a forward that builds gradients refuses: each
        gradient would be counted once per CP rank. full_recompute_layers: how many leading layers
        to recompute in full (by default ``plan_recompute``'s answer; the step asks it first, to
        report the plan)."""
        seqs = SeqBoundaries.coerce(cu_seqlens, input_ids.device)
        t = input_ids.shape[0]
        if seqs.num_tokens != t or position_ids.shape != input_ids.shape:
            raise ValueError(f"input_ids has {t} tokens, position_ids {tuple(position_ids.shape)}, "
                             f"cu_seqlens ends at {seqs.num_tokens}")
        if context is None and self.parallel.cp_size > 1 and torch.is_grad_enabled():
            raise ValueError("context parallelism: a forward that builds gradients needs the micro-batch's "
                             "ContextShard (parallel.context.split), or each gradient counts once per CP rank")
        if context is not None:
            if cache is not None:
                raise ValueError("context parallelism does not split generation: call without context")
            input_ids, position_ids = input_ids[context.tokens], position_ids[context.tokens]
            t = context.rows
        sp = (self.parallel.sequence_parallel and cache is None) if sequence_parallel is None else sequence_parallel
        if sp and t % self.parallel.tp_size:
            raise ValueError(f"sequence parallelism needs the token count ({t}) to be a multiple of "
                             f"the TP size ({self.parallel.tp_size}); pad with a dummy sequence")
        cos, sin = self.rope(position_ids)  # [t, hd]
        p = ForwardInputs(cos, sin, seqs, self.attention_backend, sp, cache, context, self.parallel.cp_group)
        x = self.embed(input_ids, sp)  # [t, h], or [t/tp, h] under SP
        if not torch.is_grad_enabled():
            full_recompute_layers = 0
        elif full_recompute_layers is None:
            full_recompute_layers = self.plan_recompute(t)
        delta = None
        for i, layer in enumerate(self.layers):
            if i < full_recompute_layers:
                x, delta = checkpoint(layer, x, delta, p, use_reentrant=False)
            else:
                x, delta = layer(x, delta, p)
        _, x = self.norm(x, delta)
        return self.logits(x, sp) if return_logits else x

    def plan_recompute(self, tokens: int) -> int:
        """How many leading layers a forward with gradients over ``tokens`` rows (the rank's under
        context parallelism: ``ContextShard.rows``) recomputes in full."""
        if self.recompute != "auto":
            return self.cfg.num_layers if self.recompute == "full" else 0
        device = self.embed.weight.device
        if device.type != "cuda":
            return 0
        return memory.full_recompute_layers(self.layout, tokens, self.parallel.sequence_parallel,
                                     self.embed.weight.element_size(), memory.activation_budget(device),
                                     self.parallel.cp_size)

    def logits(self, hidden: torch.Tensor, sequence_parallel: bool | None = None) -> torch.Tensor:
        """Full-vocabulary fp32 logits ``[t, V]`` gathered over TP, from hidden states sharded along
        tokens when ``sequence_parallel`` (by default: as the training forward shards them).
        Materialises t x V floats: for generation, tests and inspection; training goes through the
        fused head (parallel/logprob_head.py) and never builds them."""
        group = self.parallel.tp_group
        sp = self.parallel.sequence_parallel if sequence_parallel is None else sequence_parallel
        h = gather_tokens(hidden, group) if sp else copy_to_tp(hidden, group)
        return gather_last_dim(F.linear(h, self.head_weight).float(), group)  # [t, V]
