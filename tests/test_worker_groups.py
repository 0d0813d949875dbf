"""A worker running fused groups back to back: it records one group's end (its best
checkpoints on disk, its trials finished) on the checkpoint writer's thread while it trains
the next group, and never records a trial finished before its best checkpoint is written."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.runner import checkpoint_writer
from engine.runner.worker import Worker
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import Storage, TrialState
from engine.workspace import launch_study

STUDY = (
    '[study]\nname = "groups"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 20\n'
    'eval_every = 10\nbudget = {budget}\nfuse = 4\n[fixed]\nwidth = 16\n'
    '[nuisance]\nlearning_rate = {{ low = 1e-3, high = 1e-1, scale = "log" }}\n'
)


def _worker(tmp_path: Path, budget: int) -> tuple[Storage, Worker]:
    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    launch_study(store, parse_study(STUDY.format(budget=budget)))
    return store, Worker(store, ws, "w", "cpu", "cpu", group_size=4)


def test_the_next_group_trains_while_the_last_groups_best_checkpoints_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, worker = _worker(tmp_path, budget=8)
    groups: list[set[int]] = []
    second_started = threading.Event()
    seen: dict[str, Any] = {}

    fused_of = worker._fused_function

    def fused_function(trial: Any) -> Any:
        train = fused_of(trial)

        def run(hps: Any, contexts: Any) -> Any:
            groups.append({ctx.trial_id for ctx in contexts})
            if len(groups) == 2:
                second_started.set()
            return train(hps, contexts)
        return run

    monkeypatch.setattr(worker, "_fused_function", fused_function)
    save_batch = checkpoint_writer._save_batch

    def gated(jobs: list[Any], *rest: Any) -> None:
        ids = {job.trial_id for job in jobs}
        if not seen and groups and ids == groups[0] and all(job.kind == "best" for job in jobs):
            # the first group's final bests: hold them until the second group is training
            seen["overlapped"] = second_started.wait(timeout=30)
            seen["states"] = {store.get_trial(i).state for i in groups[0]}
        save_batch(jobs, *rest)

    monkeypatch.setattr(checkpoint_writer, "_save_batch", gated)
    worker.serve(once=True)

    assert seen["overlapped"], "the worker waited for the first group's checkpoints before training on"
    assert seen["states"] == {TrialState.RUNNING}, "a trial was finished before its best checkpoint was written"
    trials = store.list_trials()
    assert len(trials) == 8 and {t.state for t in trials} == {TrialState.COMPLETED}
    for trial in trials:
        best = {cp.kind: cp for cp in store.get_checkpoints(trial.id)}["best"]
        saved = torch.load(best.path, weights_only=True)
        assert saved["step"] == best.step == trial.best_step
    assert not worker.finishing


def test_a_groups_trials_fail_when_their_best_checkpoints_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, worker = _worker(tmp_path, budget=4)

    def disk_full(jobs: list[Any], *rest: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_writer, "_save_batch", disk_full)
    worker.serve(once=True)

    trials = store.list_trials()
    assert len(trials) == 4
    for trial in trials:
        assert trial.state == TrialState.FAILED
        assert "could not save results: writing its best checkpoint failed" in trial.error
        assert not [cp for cp in store.get_checkpoints(trial.id) if cp.kind == "best"]


def test_no_latest_checkpoint_is_written_at_a_trials_last_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished trial never resumes: at its last step only the best is kept, which halves
    (or better) a fused group's final batch when a periodic save falls due there."""
    from engine.runner import context
    from engine.runner import worker as worker_module

    monkeypatch.setattr(context, "PERSIST_SECONDS", 0.0)  # every evaluation is due for a save
    monkeypatch.setattr(worker_module, "PERSIST_SECONDS", 0.0)
    monkeypatch.setattr(checkpoint_writer, "DUTY_CYCLE", 1.0)  # and the writer never cools down
    store, worker = _worker(tmp_path, budget=4)
    worker.serve(once=True)

    for trial in store.list_trials():
        assert trial.state == TrialState.COMPLETED
        kinds = {cp.kind: cp for cp in store.get_checkpoints(trial.id)}
        latest = kinds["latest"]  # saved at an evaluation before the end (they are at 0, 10, 19)
        assert latest.step in (0, 10) and torch.load(latest.path, weights_only=True)["step"] == latest.step
        assert kinds["best"].step == trial.best_step
