"""Plan each global batch before it runs, identically on every rank, with no communication.

Each epoch is a seeded permutation of the dataset; global batch k is its k-th slice of
``global_batch`` items (the last incomplete slice is dropped by default: 53,175 pairs in batches
of 32 give the paper's 1,661 steps). The slice is split over the data-parallel ranks by length,
longest item first to the rank with the fewest tokens so far, so ranks finish together. Because
every rank computes the same plan from (seed, epoch, step), the global totals that scale the loss
(pairs, or SFT response tokens) are known everywhere before the first micro-batch, and resuming
needs only (epoch, step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..settings import ConfigError


@dataclass(frozen=True)
class StepPlan:
    epoch: int
    step: int  # within the epoch
    items: tuple[int, ...]  # this DP rank's items of the global batch
    global_items: int  # items in the global batch (P pairs, or S SFT sequences)
    global_response_tokens: int  # response tokens of the whole global batch (SFT's N)


class GlobalBatchSampler:
    def __init__(self, token_lengths, response_lengths, global_batch: int, dp_rank: int = 0, dp_size: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        """token_lengths[i]: tokens item i costs (its pair's two sequences, or its SFT sequence);
        response_lengths[i]: its response tokens (for SFT's global token count)."""
        self.token_lengths = np.asarray(token_lengths, dtype=np.int64)
        self.response_lengths = np.asarray(response_lengths, dtype=np.int64)
        n = len(self.token_lengths)
        if global_batch < dp_size:
            raise ConfigError(f"global batch ({global_batch}) is smaller than the data-parallel size ({dp_size})")
        if n < global_batch:
            raise ConfigError(f"the dataset has {n} items, fewer than one global batch of {global_batch}")
        self.global_batch, self.dp_rank, self.dp_size = global_batch, dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.steps_per_epoch = n // global_batch if drop_last else -(-n // global_batch)
        self.epoch, self.step = 0, 0
        self._order_epoch, self._order = None, None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            n = len(self.token_lengths)
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n))
            self._order_epoch = epoch
        return self._order

    def split(self, items: np.ndarray) -> list[list[int]]:
        """Longest-processing-time split of one global batch over the DP ranks."""
        shares, load = [[] for _ in range(self.dp_size)], np.zeros(self.dp_size, dtype=np.int64)
        for i in sorted(items.tolist(), key=lambda i: (-self.token_lengths[i], i)):
            r = int(np.argmin(load))
            shares[r].append(i)
            load[r] += self.token_lengths[i]
        return shares

    def plan(self) -> StepPlan:
        """The current step's plan (call ``advance`` once it has run)."""
        order = self._epoch_order(self.epoch)
        items = order[self.step * self.global_batch:(self.step + 1) * self.global_batch]
        return StepPlan(self.epoch, self.step, tuple(self.split(items)[self.dp_rank]), len(items),
                        int(self.response_lengths[items].sum()))

    def advance(self) -> None:
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "global_batch": self.global_batch,
                "num_items": len(self.token_lengths), "shuffle": self.shuffle}

    # what a resumed run must share with the saved one, by the trainer's names
    MUST_MATCH = {"seed": "data.seed", "global_batch": "data.global_batch", "num_items": "items in data.path",
                  "shuffle": "data.shuffle"}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        changed = [f"{name} {state[key]} -> {mine[key]}" for key, name in self.MUST_MATCH.items()
                   if key in state and state[key] != mine[key]]  # checkpoints before "shuffle" lack it
        if changed:
            raise ConfigError(f"the checkpoint's data settings differ from this run's: {', '.join(changed)}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
