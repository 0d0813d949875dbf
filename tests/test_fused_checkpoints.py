"""A fused group checkpoints as one unit: every member's latest checkpoint is saved at the
same steps, so a crash costs each member the same little progress (issue 15 #3: member 0
was always offered first, made the writer busy, and members 1..7 skipped every later save,
resuming at step 301 of 3000 after a kill)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import engine.runner.context as context
from engine.runner.context import MetricBuffer, TrialContext
from engine.store import MemoryStorage, NewTrial


class BusyWriter:
    """A checkpoint writer that stays busy until told its batch is on disk."""

    def __init__(self) -> None:
        self.saved: list[tuple[int, str, int]] = []
        self.pending = 0

    def submit(self, trial_id: int, kind: str, step: int, path: Path, value: Any, state: Any) -> None:
        self.saved.append((trial_id, kind, step))
        self.pending += 1

    def busy(self) -> bool:
        return self.pending > 0

    def written(self) -> None:
        self.pending = 0


def test_every_member_of_a_fused_group_saves_its_latest_at_the_same_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(context, "PERSIST_SECONDS", 0.0)  # a save is due whenever the writer is free
    store = MemoryStorage()
    exp = store.create_experiment("e", "builtin:x")
    study = store.create_study(exp.id, "s", {"max_train_steps": 100}, seed=0)
    store.add_trials(study.id, [NewTrial({"lr": i}, i, group_key="g") for i in range(8)])
    trials = store.claim_trials("w", "cpu", limit=8, group=True)
    writer, shared = BusyWriter(), MetricBuffer()
    group = [TrialContext(store, t, "val_error", "min", 1, tmp_path / str(t.id), "cpu", writer,  # type: ignore[arg-type]
                          shared, first_persist=0.0) for t in trials]
    model = torch.nn.Linear(1, 1)
    for step in range(30):
        for ctx in group:
            ctx.report(step, val_error=1.0)  # no new best after step 0: only latest saves
        for ctx in group:
            ctx.checkpoint(step, model=model)
        if step % 3 == 2:  # the writer finishes a batch every third step
            writer.written()
    latest = [(tid, step) for tid, kind, step in writer.saved if kind == "latest"]
    per_trial = Counter(tid for tid, _ in latest)
    assert set(per_trial) == {t.id for t in trials}
    assert len(set(per_trial.values())) == 1 and min(per_trial.values()) >= 8  # all alike, often
    steps = {tid: [s for t, s in latest if t == tid] for tid in per_trial}
    assert len({tuple(v) for v in steps.values()}) == 1  # the same steps for every member
