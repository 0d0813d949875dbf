"""The background poller: reads the workspace in a worker thread, posts what it saw.

Every ``interval`` seconds (and whenever the UI asks, e.g. after a selection change) it
reads the snapshot, the followed study's trials, the curves of the followed trials and the
devices, and posts one coalescing :class:`~tuneplay_tui.messages.WorkspacePolled`.
Curves are read incrementally: only trials whose ``steps_done`` moved are re-read, and
from their last known step when the facade supports ``since_step``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.store.base import MetricRow, Trial
from tuneplay_tui.format import one_line
from tuneplay_tui.messages import WorkspacePolled

if TYPE_CHECKING:
    from textual.app import App

Series = tuple[list[int], list[float]]


class Poller:
    """Polls a facade from a thread worker; set ``study_id``/``follow_trials`` from the UI."""

    def __init__(self, app: App[Any], facade: Any, interval: float = 1.0) -> None:
        self.app = app
        self.facade = facade
        self.interval = interval
        self.study_id: int | None = None
        self.follow_trials: tuple[int, ...] = ()
        self._lock = threading.Lock()
        self._busy = False
        self._again = False
        self._cache: dict[int, dict[str, Series]] = {}
        self._seen_steps: dict[int, int] = {}
        self._version = 0
        self._since = _accepts(facade.curves, "since_step")

    def start(self) -> None:
        """Poll now, then every ``interval`` seconds (never, in tests, with interval 0)."""
        if self.interval > 0:
            self.app.set_interval(self.interval, self.request, name="poll")
        self.request()

    def request(self) -> None:
        """Ask for a poll; if one is in flight, run another right after it."""
        with self._lock:
            if self._busy:
                self._again = True
                return
            self._busy = True
        self.app.run_worker(self._run, thread=True, group="poller", name="poll",
                            exit_on_error=False)

    def follow(self, study_id: int | None, trial_ids: Sequence[int] | None = None) -> None:
        """Follow a study (and, optionally, which of its trials' curves to read)."""
        changed = study_id != self.study_id or (
            trial_ids is not None and tuple(trial_ids) != self.follow_trials)
        self.study_id = study_id
        if trial_ids is not None:
            self.follow_trials = tuple(trial_ids)
        if changed:
            self.request()

    def _run(self) -> None:
        while True:
            try:
                message = self.read()
            except Exception as exc:  # noqa: BLE001 (an unreachable engine is a state, not a crash)
                message = WorkspacePolled(None, error=one_line(exc))
            self.app.post_message(message)
            with self._lock:
                if not self._again:
                    self._busy = False
                    return
                self._again = False

    def read(self) -> WorkspacePolled:
        """One poll (runs in the worker thread)."""
        snapshot = self.facade.snapshot()
        study_id = self.study_id
        trials = self.facade.trials(study_id) if study_id is not None else None
        curves = self._read_curves(trials or [], self.follow_trials)
        return WorkspacePolled(snapshot, study_id, trials, curves, self._version, self._devices())

    def _devices(self) -> list[Any]:
        try:
            return list(self.facade.devices())
        except Exception:  # noqa: BLE001 (device stats are a nicety; never fail a poll)
            return []

    def _read_curves(self, trials: Sequence[Trial], follow: Sequence[int]) -> dict[int, Any]:
        by_id = {t.id: t for t in trials}
        wanted = [i for i in follow if i in by_id]
        for gone in set(self._cache) - set(wanted):
            self._cache.pop(gone, None)
            self._seen_steps.pop(gone, None)
        stale = [i for i in wanted if self._seen_steps.get(i) != by_id[i].steps_done
                 or i not in self._cache]
        if stale:
            self._fetch(stale, by_id)
            self._version += 1
        return {i: {m: (tuple(s), tuple(v)) for m, (s, v) in self._cache[i].items()}
                for i in wanted if i in self._cache}

    def _fetch(self, ids: list[int], by_id: dict[int, Trial]) -> None:
        restart = [i for i in ids if by_id[i].steps_done < self._seen_steps.get(i, 0)]
        for i in restart:  # requeued from scratch: read it again from the start
            self._cache.pop(i, None)
        since = None
        if self._since and all(i in self._cache for i in ids):
            since = min(_last_step(self._cache[i]) for i in ids) + 1
        rows = (self.facade.curves(ids, since_step=since) if since is not None
                else self.facade.curves(ids))
        fresh = {i: self._cache.get(i, {}) if since is not None else {} for i in ids}
        _merge(fresh, rows)
        for i in ids:
            self._cache[i] = fresh[i]
            self._seen_steps[i] = by_id[i].steps_done


def _merge(cache: dict[int, dict[str, Series]], rows: Sequence[MetricRow]) -> None:
    """Append rows (sorted by trial, step) to each series past its last step."""
    for r in rows:
        series = cache.setdefault(r.trial_id, {}).setdefault(r.name, ([], []))
        if not series[0] or r.step > series[0][-1]:
            series[0].append(r.step)
            series[1].append(r.value)


def _last_step(series: dict[str, Series]) -> int:
    return min((s[-1] for s, _ in series.values() if s), default=-1)


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
