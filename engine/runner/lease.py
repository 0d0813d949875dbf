"""A worker's view of the store: every write it makes carries the lease of its trial.

:class:`FencedStore` wraps a ``Storage`` for one worker process. Its claims take leases
(``host``, ``lease_seconds``) and remember each trial's token; its writes (metrics,
checkpoint records, a trial's end or pause) pass those tokens, so a worker whose lease
expired (frozen, cut off from the database, outlived by a reclaim on another host) writes
nothing. Trials whose lease is found lost are collected in :attr:`FencedStore.lost`; the
worker stops training them and records nothing more for them.

Reads and anything else go to the wrapped store unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.store.base import (
    DEFAULT_LEASE_SECONDS,
    Checkpoint,
    LeaseLost,
    MetricRow,
    Storage,
    Trial,
    TrialProgress,
    TrialState,
)

log = logging.getLogger("tuneplay.worker")


class FencedStore:
    """``store`` with this worker's leases attached to its writes.

    Args:
        store: the shared store.
        host: the engine host the worker belongs to (recorded on claimed trials).
        lease_seconds: how long a claim or renewal holds a trial without another renewal.
    """

    def __init__(self, store: Storage, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.inner = store
        self.host = host
        self.lease_seconds = lease_seconds
        self.leases: dict[int, str] = {}
        self.lost: set[int] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _of(self, ids: Iterable[int]) -> dict[int, str]:
        """The tokens of ``ids`` this worker holds ("" for ones it never held: refused)."""
        with self._lock:
            return {int(i): self.leases.get(int(i), "") for i in ids}

    def _lose(self, ids: Iterable[int]) -> None:
        with self._lock:
            ids = [int(i) for i in ids if int(i) not in self.lost]
            if not ids:
                return
            for i in ids:
                self.leases.pop(i, None)
            self.lost.update(ids)
        log.warning("lease lost for trials %s: another worker holds them now; this worker "
                    "stops them and records nothing more", sorted(ids))

    def _release(self, ids: Iterable[int]) -> None:
        with self._lock:
            for i in ids:
                self.leases.pop(int(i), None)

    # -- claims and renewals -----------------------------------------------------------
    # The signatures are the protocol's; a lease or host a caller passes is ignored: this
    # worker's own are used.
    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False, *, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Trial]:
        trials = self.inner.claim_trials(worker, device, limit, study_id, group,
                                         host=self.host, lease_seconds=self.lease_seconds)
        with self._lock:
            for t in trials:
                self.leases[t.id] = t.lease_token
        return trials

    def renew(
        self, leases: Mapping[int, str] | Sequence[int], steps_done: Mapping[int, Any] | None = None, *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> dict[int, TrialState | None]:
        """Renew the leases of the trials given (ids); a lost one goes to :attr:`lost`."""
        trial_ids = list(leases)
        states = self.inner.renew(self._of(trial_ids), steps_done, lease_seconds=self.lease_seconds)
        self._lose(i for i, st in states.items() if st is None)
        return states

    # -- fenced writes -----------------------------------------------------------------
    def write_metrics(self, rows: Sequence[MetricRow], *, leases: Mapping[int, str] | None = None) -> list[int]:
        refused = self.inner.write_metrics(rows, leases=self._of({r.trial_id for r in rows}))
        self._lose(refused)
        return refused

    def record_checkpoint(self, checkpoint: Checkpoint, *, lease: str | None = None) -> None:
        try:
            self.inner.record_checkpoint(checkpoint, lease=self._of([checkpoint.trial_id])[checkpoint.trial_id])
        except LeaseLost:
            self._lose([checkpoint.trial_id])
            raise

    def record_checkpoints(
        self, checkpoints: Sequence[Checkpoint], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        refused = self.inner.record_checkpoints(checkpoints, leases=self._of({c.trial_id for c in checkpoints}))
        self._lose(refused)
        return refused

    def finish_trial(self, trial_id: int, progress: TrialProgress, *, lease: str | None = None) -> Trial:
        try:
            trial = self.inner.finish_trial(trial_id, progress, lease=self._of([trial_id])[trial_id])
        except LeaseLost:
            self._lose([trial_id])
            raise
        self._release([trial_id])
        return trial

    def finish_trials(
        self, items: Sequence[tuple[int, TrialProgress]], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        ids = [i for i, _ in items]
        done = self.inner.finish_trials(items, leases=self._of(ids))
        # not recorded: lost, unless the trial had finished anyway (a user's cancel)
        self._lose(i for i in ids if i not in done and not self.inner.get_trial(i).state.is_finished())
        self._release(ids)
        return done

    def set_state(
        self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState],
        leases: Mapping[int, str] | None = None,
    ) -> int:
        moved = self.inner.set_state(trial_ids, state, only_from=only_from, leases=self._of(trial_ids))
        if TrialState(state) is not TrialState.RUNNING:
            self._release(trial_ids)
        return moved

    def heartbeat(self, trial_ids: Sequence[int], steps_done: Mapping[int, Any] | None = None) -> dict[int, TrialState]:
        """The unfenced heartbeat is not for workers: they renew their leases."""
        raise TypeError("a worker renews its leases (FencedStore.renew), it does not heartbeat")
