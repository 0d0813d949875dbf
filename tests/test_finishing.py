"""A fused group's ends, decided without a worker (engine.runner.finishing)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from engine.runner.context import StopReason
from engine.runner.finishing import (
    BEST_NOT_WRITTEN,
    EndKind,
    Handover,
    attempt_end,
    group_ends,
    record_ends,
)
from engine.store import MemoryStorage, NewTrial, Trial, TrialState


def _ctx(last_step: int = 99, stop: str = StopReason.NONE, diverged: Any = None) -> Any:
    return SimpleNamespace(diverged_at=diverged, stop_reason=stop, last_step=last_step, best_step=40,
                           best_value=0.25)


def _trials(n: int) -> tuple[MemoryStorage, list[Trial]]:
    store = MemoryStorage()
    exp = store.create_experiment("e", "builtin:x")
    study = store.create_study(exp.id, "s", {"max_train_steps": 100}, seed=0)
    store.add_trials(study.id, [NewTrial({"i": i}, i, group_key="g") for i in range(n)])
    return store, store.claim_trials("w", "cpu", limit=n, group=True)


def test_each_kind_of_end() -> None:
    _, (t,) = _trials(1)
    done = attempt_end(_ctx(), t, TrialState.COMPLETED, "", 3.0)
    assert done.kind is EndKind.FINISHED and done.progress is not None
    assert (done.progress.state, done.progress.steps_done, done.progress.best_step) == (TrialState.COMPLETED, 100, 40)
    diverged = attempt_end(_ctx(diverged=(7, "train_loss", math.nan)), t, TrialState.COMPLETED, "", 1.0)
    assert diverged.progress is not None and diverged.progress.state is TrialState.DIVERGED
    assert diverged.progress.error == "train_loss = nan at step 7"
    assert attempt_end(_ctx(50, StopReason.PAUSE), t, TrialState.COMPLETED, "", 1.0).kind is EndKind.PAUSED
    # paused at its very last step: nothing is left to resume, so it is finished
    assert attempt_end(_ctx(99, StopReason.PAUSE), t, TrialState.COMPLETED, "", 1.0).kind is EndKind.FINISHED
    for stop in (StopReason.CANCEL, StopReason.LOST):  # the user's, or the new holder's, end stands
        assert attempt_end(_ctx(50, stop), t, TrialState.COMPLETED, "", 1.0).kind is EndKind.NOTHING
    failed = attempt_end(_ctx(), t, TrialState.FAILED, "ValueError: boom", 1.0)
    assert failed.progress is not None and failed.progress.error == "ValueError: boom"


def test_a_member_whose_best_checkpoint_was_not_written_fails_and_the_rest_complete() -> None:
    store, trials = _trials(4)
    contexts = [_ctx(), _ctx(), _ctx(50, StopReason.PAUSE), _ctx(50, StopReason.CANCEL)]
    handed = [Handover(True, best_sent=True), Handover(False, "could not save results: disk"),
              Handover(True), Handover(True)]
    ends = group_ends(contexts, trials, TrialState.COMPLETED, "", 2.0, handed, written=False)
    assert [e.kind for e in ends] == [EndKind.FINISHED, EndKind.FINISHED, EndKind.PAUSED, EndKind.NOTHING]
    assert ends[0].progress is not None and ends[0].progress.state is TrialState.FAILED
    assert ends[0].progress.error == BEST_NOT_WRITTEN
    assert ends[1].progress is not None and ends[1].progress.error == "could not save results: disk"
    record_ends(store, ends)
    assert [store.get_trial(t.id).state for t in trials] == [
        TrialState.FAILED, TrialState.FAILED, TrialState.PAUSED, TrialState.RUNNING]
    # written: the member whose best went with the batch completes
    ok = group_ends(contexts[:1], trials[:1], TrialState.COMPLETED, "", 2.0, handed[:1], written=True)
    assert ok[0].progress is not None and ok[0].progress.state is TrialState.COMPLETED
