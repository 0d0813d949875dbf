"""Messages that carry background results to the UI thread.

Workers never touch widgets or reactives: they post one of these (``post_message`` is
thread-safe). The poller's message coalesces: a newer one replaces a pending one, so a
fast trial or a slow UI frame can never pile up a queue of stale updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from engine.facade import DeviceUsage, Snapshot
from engine.store.base import Trial

# trial id -> metric name -> (steps, values)
CurveData = Mapping[int, Mapping[str, tuple[Sequence[int], Sequence[float]]]]


@dataclass
class WorkspacePolled(Message):
    """One poll of the workspace: the snapshot, the followed study's trials and curves.

    ``error`` is set (and the rest may be None) when the engine could not be read.
    ``trials``/``curves`` are complete for what is followed, not deltas, so replacing a
    pending message with a newer one loses nothing.
    """

    snapshot: Snapshot | None
    study_id: int | None = None
    trials: Sequence[Trial] | None = None
    curves: CurveData = field(default_factory=dict)
    curves_version: int = 0
    devices: Sequence[DeviceUsage] = ()
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, WorkspacePolled)


@dataclass
class EngineCallDone(Message):
    """A facade call made from a worker finished; ``on_done`` runs on the UI thread."""

    label: str
    result: Any = None
    error: str | None = None
    on_done: Callable[[Any], None] | None = None


@dataclass
class AnalysisReady(Message):
    """A study's analysis report (``engine.analysis.StudyReport``) or why it failed."""

    study_id: int
    report: Any = None
    error: str | None = None
    n_finished: int = 0

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AnalysisReady) and message.study_id == self.study_id


@dataclass
class PreviewReady(Message):
    """The design screen's validated spec and preview points, or the validation error."""

    text: str
    spec: Any = None
    points: Sequence[Mapping[str, Any]] = ()
    error: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PreviewReady)


@dataclass
class NoticeRaised(Message):
    """A notification for the notice bar (posted, so ``notify`` is safe from any thread)."""

    notice: Any


def run_engine_call(node: Any, label: str, fn: Callable[[], Any],
                    on_done: Callable[[Any], None] | None = None) -> None:
    """Run ``fn`` (a facade call) in a thread of ``node`` (the app or a screen) and post
    :class:`EngineCallDone` to it: the result, or the error as one line (never a traceback)."""
    from tuneplay_tui.format import one_line

    def job() -> None:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 (an error boundary)
            node.post_message(EngineCallDone(label, error=one_line(exc)))
            return
        node.post_message(EngineCallDone(label, result, on_done=on_done))

    node.run_worker(job, thread=True, name=label, group=label, exit_on_error=False)
