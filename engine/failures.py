"""Failed trials with what their program last printed, for ``tuneplay status`` and the report.

A failure's ``error`` says how it ended ("exited with code 1: ValueError: bad lr"); the
last lines of a command trial's ``output.log`` usually say why (the traceback, the last
loss printed). Python workloads have no such file: their failures show the error alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.store.base import Trial, TrialState
from engine.trial_output import output_tail

TAIL_LINES = 5


@dataclass(frozen=True)
class FailedTrial:
    """One FAILED trial: its id and number, kind (search or a seed rerun), the error, and the
    last lines its program printed (empty for a Python workload's trial)."""

    trial_id: int
    number: int
    kind: str
    error: str
    tail: tuple[str, ...]


def failed_trials(
    workspace: Path | None, trials: Sequence[Trial], limit: int | None = None,
    lines: int = TAIL_LINES,
) -> tuple[list[FailedTrial], int]:
    """The latest ``limit`` failed trials (most recently finished first) with their output
    tails, and how many trials failed in all. Without a ``workspace`` there are no tails."""
    failed = [t for t in trials if t.state == TrialState.FAILED]
    failed.sort(key=lambda t: (t.finished_at or 0.0, t.id), reverse=True)
    shown = failed if limit is None else failed[:limit]
    out = [FailedTrial(t.id, t.number, t.kind, t.error or "no error recorded",
                       tuple(output_tail(workspace, t.id, lines)) if workspace else ())
           for t in shown]
    return out, len(failed)


def failure_lines(failure: FailedTrial, indent: str = "") -> list[str]:
    """``#12 failed: <error>``, then each tail line under it, indented and ruled."""
    error = " ".join(failure.error.split())
    return [f"{indent}#{failure.trial_id} failed: {error}",
            *(f"{indent}  │ {line}" for line in failure.tail)]


def more_failed_line(shown: int, total: int, study: str, indent: str = "") -> str | None:
    """The line that says how many failures were left out, and where to find them all."""
    if total <= shown:
        return None
    return (f"{indent}… and {total - shown} more failed trial{'s' if total - shown > 1 else ''} "
            f"(`tuneplay export {study}` lists every error)")
