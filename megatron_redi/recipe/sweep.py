"""The paper's hyperparameter grids (its Appendix C.4 sweeps) and any other grid, as runs of the
trainer: tools/sweep.py plans, writes and launches them."""

from __future__ import annotations

import itertools

from ..settings import ConfigError

PRESETS = {
    "redi": [{"loss.alpha": a, "optim.lr": lr} for a, lrs in ((0.2, (1e-6,)), (0.5, (1e-6, 2e-6)), (0.8, (1e-6,)),
                                                              (1.0, (1e-6, 2e-7, 1e-7))) for lr in lrs],
    "dpo": [{"loss.beta": b, "optim.lr": lr} for b, lrs in ((0.1, (1e-6, 1e-7, 1e-8)), (0.01, (1e-6, 5e-7, 2e-7, 1e-7)),
                                                            (0.001, (1e-6, 5e-7, 2e-7, 1e-7))) for lr in lrs],
    "simpo": [{"loss.beta": 2.0, "loss.gamma": 1.0, "optim.lr": 5e-7},
              {"loss.beta": 10.0, "loss.gamma": 5.0, "optim.lr": 3e-7}],
}


def grid_runs(specs: list[str]) -> list[dict]:
    """``section.key=v1,v2`` specs -> the product of their values, one dict per run."""
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values:
            raise ConfigError(f"--grid {spec!r}: expected section.key=value[,value...]")
        axes.append([(key, v) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def run_name(overrides: dict) -> str:
    return "_".join(f"{key.split('.')[-1]}{value}" for key, value in overrides.items())
