"""A trial resumes only from a checkpoint the store records for it, on a later attempt: a
``latest.pt`` left by another workspace (a copied folder, a deleted database) is never used."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from engine.runner.context import TrialContext
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import Checkpoint, TrialState
from engine.workspace import launch_study

STUDY = ('[study]\nname = "r"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 2000\n'
         'budget = 1\nfuse = "off"\n')


def test_only_a_recorded_checkpoint_of_an_earlier_attempt_is_resumed(tmp_path: Path) -> None:
    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    launch_study(store, parse_study(STUDY))
    folder = ws / "checkpoints" / "1"
    folder.mkdir(parents=True)
    torch.save({"step": 997, "model": None, "optimizer": None, "extra": {}}, folder / "latest.pt")

    def restored() -> int:
        (trial,) = store.claim_trials("w", "cpu", limit=1)
        start = TrialContext(store, trial, "val_error", "min", 10, folder, "cpu").restore()
        store.set_state([trial.id], TrialState.QUEUED, only_from=[TrialState.RUNNING])
        return start

    assert restored() == 0  # attempt 1: the file is a leftover, not this trial's
    assert restored() == 0  # attempt 2, but the store records no checkpoint of it
    store.record_checkpoint(Checkpoint(1, "latest", 997, str(folder / "latest.pt"), None, time.time()))
    assert restored() == 998


def test_a_later_attempt_deletes_earlier_attempts_files_that_are_no_longer_recorded(
    tmp_path: Path,
) -> None:
    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    launch_study(store, parse_study(STUDY))
    folder = ws / "checkpoints" / "1"

    def save(attempt: int, kind: str, step: int, value: float | None) -> None:
        path = folder / f"a{attempt}" / f"{kind}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"step": step, "model": None, "optimizer": None, "extra": {}}, path)
        store.record_checkpoint(Checkpoint(1, kind, step, str(path), value, time.time()))

    (first,) = store.claim_trials("w", "cpu", limit=1)
    save(1, "latest", 500, None)
    save(1, "best", 400, 0.2)
    (folder / "notes").mkdir()  # not an attempt's folder: never touched
    store.set_state([first.id], TrialState.QUEUED, only_from=[TrialState.RUNNING])
    (second,) = store.claim_trials("w", "cpu", limit=1)
    ctx = TrialContext(store, second, "val_error", "min", 10, folder, "cpu")
    assert ctx.prune_attempts() == []  # a1's files are still the recorded ones
    assert ctx.restore() == 501
    save(2, "latest", 900, None)
    assert ctx.prune_attempts() == ["a1/latest.pt"]  # superseded; a1's best is still recorded
    assert sorted(p.name for p in (folder / "a1").iterdir()) == ["best.pt"]
    save(2, "best", 800, 0.1)
    assert ctx.prune_attempts() == ["a1/best.pt"]
    assert sorted(p.name for p in folder.iterdir()) == ["a2", "notes"]
    assert sorted(p.name for p in (folder / "a2").iterdir()) == ["best.pt", "latest.pt"]
