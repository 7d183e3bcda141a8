"""Evaluation: generation with a KV cache, answer checking, pass@1 with SEM and pass@k.

The names below are imported when first used, so that importing one module of the package (the
answer checkers, in each checking worker: checking.py) does not import the rest of it (torch,
the model) for nothing.
"""

import importlib
import sys
import types

_HOMES = {"is_correct": "answers", "last_boxed": "answers", "generate": "generate", "pass_at_k": "metrics",
          "summarize": "metrics", "Protocol": "protocol", "BenchmarkError": "runner", "build_prompt": "runner",
          "evaluate": "runner", "load_benchmark": "runner", "prompt_text": "runner", "score": "runner"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """``generate`` names both a submodule and the function the package exports: loading the
    submodule records it as the package's attribute, which would hide the function from
    ``__getattr__``; the export keeps the name."""

    @property
    def generate(self):
        return importlib.import_module(".generate", __name__).generate

    @generate.setter
    def generate(self, submodule):
        pass


sys.modules[__name__].__class__ = _Package
