"""Fused operations, each beside its plain-PyTorch reference, behind one availability check."""

from .logprob import head_logprobs, sequence_logprobs
from .logprob_kernels import KERNELS

__all__ = ["KERNELS", "head_logprobs", "sequence_logprobs"]
