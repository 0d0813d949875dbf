"""How an attempt ends, decided apart from the worker that ran it (and unit-tested so).

A trained trial ends one of three ways (:class:`EndKind`): FINISHED with a progress record
(COMPLETED, FAILED or DIVERGED), PAUSED (the engine is stopping and the trial has steps left:
the next engine resumes it), or NOTHING (a user's cancel stands, or the lease was lost and
the trial's end belongs to its new holder). A fused group's members end each on their own:
:func:`group_ends` also fails a member whose results could not be handed over or whose best
checkpoint was not written, since a trial is never COMPLETED without its best checkpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.runner.context import StopReason
from engine.store.base import Trial, TrialProgress, TrialState

BEST_NOT_WRITTEN = "could not save results: writing its best checkpoint failed (see the worker log)"


class EndKind(enum.Enum):
    FINISHED = "finished"
    PAUSED = "paused"
    NOTHING = "nothing"


@dataclass(frozen=True)
class TrialEnd:
    """One attempt's end; ``progress`` is set exactly when ``kind`` is FINISHED."""

    trial_id: int
    kind: EndKind
    progress: TrialProgress | None = None


@dataclass(frozen=True)
class Handover:
    """What became of one fused member's results at the group's end: whether its metrics and
    best checkpoint were handed to the writer (``why_not`` if not), and whether a best
    checkpoint went with them."""

    ok: bool
    why_not: str = ""
    best_sent: bool = False


def attempt_end(ctx: Any, trial: Trial, state: TrialState, error: str, seconds: float) -> TrialEnd:
    """The end of ``trial``'s attempt from its context ``ctx`` (a TrialContext) and how training
    returned (``state``/``error``: COMPLETED, or FAILED with the exception's text)."""
    if ctx.diverged_at is not None and state == TrialState.COMPLETED:
        step, name, value = ctx.diverged_at
        state, error = TrialState.DIVERGED, f"{name} = {value} at step {step}"
    elif ctx.stop_reason == StopReason.PAUSE and state == TrialState.COMPLETED:
        if ctx.last_step < trial.max_train_steps - 1:
            return TrialEnd(trial.id, EndKind.PAUSED)
    elif ctx.stop_reason in (StopReason.CANCEL, StopReason.LOST):
        return TrialEnd(trial.id, EndKind.NOTHING)
    return TrialEnd(trial.id, EndKind.FINISHED, TrialProgress(
        state=state, best_step=ctx.best_step, best_value=ctx.best_value,
        steps_done=max(ctx.last_step + 1, 0), wall_time=trial.wall_time + seconds, error=error,
    ))


def group_ends(
    contexts: Sequence[Any], trials: Sequence[Trial], state: TrialState, error: str, seconds: float,
    handed: Sequence[Handover], written: bool,
) -> list[TrialEnd]:
    """Each member's end once the group's final batch was written (``written``) or not."""
    ends = []
    for ctx, trial, h in zip(contexts, trials, handed, strict=True):
        ok, why = h.ok, h.why_not
        if ok and h.best_sent and not written:
            ok, why = False, BEST_NOT_WRITTEN
        ends.append(attempt_end(ctx, trial, state if ok else TrialState.FAILED, error if ok else why, seconds))
    return ends


def record_ends(store: Any, ends: Sequence[TrialEnd]) -> None:
    """Write the ends: paused trials PAUSED, finished ones in one write (a fused group's)."""
    paused = [e.trial_id for e in ends if e.kind is EndKind.PAUSED]
    finished = [(e.trial_id, e.progress) for e in ends if e.kind is EndKind.FINISHED and e.progress]
    if paused:
        store.set_state(paused, TrialState.PAUSED, only_from=[TrialState.RUNNING])
    if finished:
        store.finish_trials(finished)
