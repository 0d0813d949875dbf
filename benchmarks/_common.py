"""Shared bits for the benchmarks: a trial that does nothing, and percentiles."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.workloads.base import QuietTrial  # noqa: E402


class NullTrial(QuietTrial):
    """The trial API with no engine behind it (what a bare training loop pays); it keeps
    the best ``val_error`` so a benchmark can check the run learned."""

    def __init__(self, max_train_steps: int, eval_every: int, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(max_train_steps, eval_every, seed, device)
        self.best: float | None = None

    def report(self, step: int, **metrics: float) -> None:
        v = metrics.get("val_error")
        if v is not None and (self.best is None or v < self.best):
            self.best = v


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
