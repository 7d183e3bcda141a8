"""Data: raw teacher traces -> tokenised SFT sequences and preference pairs -> packed micro-batches."""

from .dataset import DatasetError, PairData, Sequence, SFTData, TokenizedData
from .packing import MicroBatch, Unit, build_micro_batch, pack
from .sampler import GlobalBatchSampler, StepPlan

__all__ = ["DatasetError", "GlobalBatchSampler", "MicroBatch", "PairData", "SFTData", "Sequence", "StepPlan",
           "TokenizedData", "Unit", "build_micro_batch", "pack"]
