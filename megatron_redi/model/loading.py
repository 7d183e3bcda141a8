"""Load an HF or native checkpoint straight into each rank's tensor-parallel shard."""

from __future__ import annotations

import dataclasses

import torch

from ..checkpoint.hf_mapping import name_table, shard_for_rank
from ..checkpoint.native import NativeCheckpointReader, open_checkpoint
from ..parallel import ParallelState
from .decoder import Decoder


def from_pretrained(path: str, parallel: ParallelState | None = None, dtype=torch.float32,
                    recompute: str = "none", attention_backend: str = "auto", **config_overrides) -> Decoder:
    """Build the model for ``parallel`` and fill it from the checkpoint at ``path``: a Hugging Face
    directory, or a native one at any TP size (resharded on the fly when it differs).

    The config and every tensor's presence and shape are checked before any weight is read, so a
    bad checkpoint fails with the name of the offending field or tensor and no half-loaded model.
    Each rank reads only the rows and columns of its own shard. ``config_overrides`` replace
    ModelConfig fields that do not change any tensor's shape (e.g. rope_theta=300000.0,
    max_position_embeddings=32768, as the paper's stage 1 did).
    """
    parallel = parallel or ParallelState()
    reader, cfg = open_checkpoint(path)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in config_overrides.items() if v is not None})
    model = Decoder(cfg, parallel, dtype=dtype, recompute=recompute,
                       attention_backend=attention_backend, device="meta")
    model = model.to_empty(device=parallel.device)
    params = dict(model.named_parameters())
    own_file = isinstance(reader, NativeCheckpointReader) and reader.tp_size == parallel.tp_size
    with torch.no_grad():
        for entry in name_table(cfg):
            if own_file:
                shard = reader.read_shard(entry.native, parallel.tp_rank)
            else:
                shard = shard_for_rank(entry, reader.read, model.layout, parallel.tp_rank)
            target = params.pop(entry.native)
            if shard.shape != target.shape:  # a mapping bug, not bad input: the shapes were validated
                raise AssertionError(f"{entry.native}: shard {tuple(shard.shape)} vs parameter {tuple(target.shape)}")
            target.copy_(shard)
    assert not params, f"parameters without a table entry: {sorted(params)}"
    return model
