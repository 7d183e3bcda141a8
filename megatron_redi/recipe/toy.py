"""The recipe's inputs at toy scale, made locally so that the whole recipe runs on a CPU in minutes:

    DIR/model/                  a tiny random Qwen2 student with its tokenizer (the MODEL of the paper's recipe)
    DIR/raw/data/train.jsonl    teacher traces in the OpenR1-Math-Raw schema (the RAW)
    DIR/benchmarks/NAME.jsonl   small held-out benchmarks under the paper's five names (the BENCH)

The task is the demo's: additions worked digit by digit, some teacher traces with a planted slip
(megatron_redi/data/synthetic.py). Three-digit numbers keep the traces, and the run, short.

    python -m megatron_redi.recipe.toy DIR
"""

from __future__ import annotations

import os
import sys

import torch

from ..atomic import atomic_directory
from ..model_config import preset
from ..data import synthetic
from ..eval.paper_results import BENCHMARK_NAMES
from ..fixtures import make_tiny_tokenizer, write_random_hf_checkpoint

DIGITS = 3
ROWS = 3000  # raw rows: about 2,200 SFT sequences and 1,900 pairs after preprocessing
BENCHMARK_PROBLEMS = 24


def write_inputs(directory: str, seed: int = 0) -> None:
    """Write the three inputs into ``directory``, which appears whole or not at all."""
    with atomic_directory(directory) as tmp:
        os.makedirs(os.path.join(tmp, "raw", "data"))
        synthetic.write_corpus(os.path.join(tmp, "raw", "data", "train.jsonl"), ROWS, DIGITS, seed=seed)
        os.makedirs(os.path.join(tmp, "benchmarks"))
        for i, name in enumerate(BENCHMARK_NAMES, 1):
            synthetic.write_benchmark(os.path.join(tmp, "benchmarks", f"{name}.jsonl"), BENCHMARK_PROBLEMS, DIGITS,
                                      seed + i)
        model = os.path.join(tmp, "model")
        cfg = preset("tiny")
        make_tiny_tokenizer(model, cfg.vocab_size, texts=synthetic.tokenizer_corpus(DIGITS))
        write_random_hf_checkpoint(model, cfg, torch.float32, seed=seed)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_inputs(sys.argv[1])
    print(f"{sys.argv[1]}: toy model, raw traces and benchmarks")
