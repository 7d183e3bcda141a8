"""Evaluation: generation with a KV cache, answer checking, pass@1 with SEM and pass@k."""

from .answers import is_correct, last_boxed
from .generate import generate
from .metrics import pass_at_k, summarize
from .protocol import Protocol
from .runner import BenchmarkError, build_prompt, evaluate, load_benchmark, prompt_text, score

__all__ = ["BenchmarkError", "Protocol", "build_prompt", "evaluate", "generate", "is_correct", "last_boxed", "load_benchmark",
           "pass_at_k", "prompt_text", "score", "summarize"]
