"""Data: raw teacher traces -> tokenised SFT sequences and preference pairs -> packed micro-batches."""

from .dataset import DatasetError, PairData, Sequence, SFTData, TokenizedData
from .packing import MicroBatch, TrainingItem, Unit, build_micro_batch, pack
from .sampler import GlobalBatchSampler, StepPlan

__all__ = ["DatasetError", "GlobalBatchSampler", "MicroBatch", "PairData", "SFTData", "Sequence", "StepPlan",
           "TokenizedData", "TrainingItem", "Unit", "build_micro_batch", "pack"]
