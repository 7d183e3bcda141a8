"""Checkpoint formats: the Hugging Face <-> native name table and its tensor surgeries."""

from .hf_mapping import (CheckpointError, Entry, HFCheckpointReader, merge_shards, name_table,
                         shard_for_rank)

__all__ = ["CheckpointError", "Entry", "HFCheckpointReader", "merge_shards", "name_table",
           "shard_for_rank"]
