"""An in-memory stand-in for the engine's trial context, shared by the workload tests."""

from __future__ import annotations

import copy
import math
from typing import Any


class FakeTrial:
    """The engine's trial context in memory; can stop after a checkpoint or a number of steps."""

    def __init__(
        self,
        max_train_steps: int = 40,
        eval_every: int = 10,
        seed: int = 0,
        stop_after_checkpoint: int | None = None,
        stop_after_steps: int | None = None,
        device: str = "cpu",
    ):
        self.max_train_steps, self.eval_every, self.seed = max_train_steps, eval_every, seed
        self.device = device
        self.reports: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.stop_after_checkpoint, self.stop_after_steps = stop_after_checkpoint, stop_after_steps
        self.stop = False
        self.calls = 0

    def report(self, step: int, **metrics: float) -> None:
        self.reports.append((step, metrics))
        if not all(math.isfinite(v) for v in metrics.values()):
            self.stop = True

    def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
        self.checkpoints[step] = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
        }
        if step == self.stop_after_checkpoint:
            self.stop = True

    def restore(self, model: Any = None, optimizer: Any = None, **extra: Any) -> int:
        if not self.checkpoints:
            return 0
        step = max(self.checkpoints)
        model.load_state_dict(self.checkpoints[step]["model"])
        optimizer.load_state_dict(self.checkpoints[step]["optimizer"])
        return step + 1

    def should_stop(self) -> bool:
        self.calls += 1
        if self.stop_after_steps is not None and self.calls >= self.stop_after_steps:
            self.stop = True
        return self.stop

    def resume(self) -> FakeTrial:
        self.stop, self.stop_after_checkpoint, self.stop_after_steps = False, None, None
        return self

    def steps(self) -> list[int]:
        return [step for step, _ in self.reports]
