"""Shared bits for the benchmarks: a trial that does nothing, and percentiles."""

from __future__ import annotations

import statistics
from typing import Any


class NullTrial:
    """The trial API with no engine behind it: what a bare training loop pays."""

    def __init__(self, max_train_steps: int, eval_every: int, seed: int = 0, device: str = "cpu") -> None:
        self.max_train_steps, self.eval_every, self.seed, self.device = max_train_steps, eval_every, seed, device
        self.trial_id = 0
        self.best: float | None = None

    def report(self, step: int, **metrics: float) -> None:
        v = metrics.get("val_error")
        if v is not None and (self.best is None or v < self.best):
            self.best = v

    def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
        pass

    def restore(self, model: Any = None, optimizer: Any = None, **extra: Any) -> int:
        return 0

    def should_stop(self) -> bool:
        return False


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
