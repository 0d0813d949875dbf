"""Bayesian suggestions computed ahead, off the engine's loop.

The engine's loop beats, reaps workers and requeues stale trials five times a second; a GP
fit takes up to a second or two (benchmarks/bayes_speed.py), and on a busy machine more. So
the coordinator never fits in its loop: :class:`Suggester` keeps, per Bayesian study, the
next trials the search proposes for the study as it is stored now (a whole slot's worth of
them, one batch conditioned on the trials still pending), computed in a background thread
and computed again whenever a result arrives. When a slot frees, the loop stores the head of
that queue at once; the trial it starts is at most the results of one fit behind.

Why the queue is kept here and not as QUEUED trials in the store: queued trials cannot be
refreshed once a result shows they are no longer the best next points (short of cancelling
them, which would litter the study), so each would be as stale as the queue is deep; a
proposal held here is replaced as soon as a fresher one is ready. A restart loses nothing:
the proposals are a function of the stored trials and the stored GP hyperparameters, so a new
engine computes the same ones.

Quasi-random studies registered with ``tuneplay create`` (whose points were not all
enqueued) are topped up here too, by enqueueing their missing points (no fit: at once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.kinds import Search
from engine.search import gp_meta_key, load_gp_hyper, points_per_combo
from engine.spec import stored_study
from engine.store.base import Storage, Study, Trial
from engine.workspace import (
    BayesAsk,
    BayesProposal,
    bayes_ask,
    commit_bayes,
    enqueue,
    occupies_slot,
    study_spec,
)

log = logging.getLogger("tuneplay.engine")

Fingerprint = tuple[object, ...]


def fingerprint(ask: BayesAsk) -> Fingerprint:
    """What a study's proposals depend on: its budget, its trials (which are finished, and
    with what), and its stored GP hyperparameters. Claims and heartbeats leave it alone."""
    trials = tuple((t.id, t.state.value, t.best_value) if t.state.is_finished() else (t.id,)
                   for t in ask.existing)  # a running trial's best-so-far moves; the search ignores it
    hyper = tuple(sorted((k, tuple(v)) for k, v in ask.hyper.items()))
    return (ask.spec.budget, trials, hyper)


@dataclass
class _Ahead:
    """A study's proposals and how many of them are stored already."""

    proposal: BayesProposal
    trial_ids: frozenset[int]  # the study's trials when it was computed
    taken: int = 0
    added: frozenset[int] = frozenset()  # the trials stored from it

    def usable(self, trials: Sequence[Trial]) -> bool:
        """Whether the proposals still know of every trial of the study: nothing was added
        since but what was stored from them (results arriving only make them a bit stale)."""
        ids = {t.id for t in trials}
        return ids == self.trial_ids | self.added and self.taken < len(self.proposal.trials)


class Suggester:
    """Keeps every Bayesian study's next trials ready; ``step`` is one round of the engine's
    loop and never waits on a GP fit.

    Args:
        store: the engine's store (used from the calling thread only; the background thread
            computes from snapshots and touches no store).
        compute: how a request is turned into proposals (tests slow it down).
    """

    def __init__(self, store: Storage, compute: Callable[[BayesAsk], BayesProposal] | None = None) -> None:
        self.store = store
        self.compute = compute or (lambda ask: ask.compute())
        self.ahead: dict[int, _Ahead] = {}
        self._wanted: dict[int, Fingerprint] = {}  # study id -> what is being (or was) computed
        self._done: list[tuple[BayesAsk, Fingerprint, BayesProposal | None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._enqueued: set[tuple[int, object]] = set()  # quasi-random (study, budget) topped up

    def busy(self) -> bool:
        """Whether a fit is running in the background."""
        return self._thread is not None and self._thread.is_alive()

    def step(self, slots: int) -> list[Trial]:
        """One round: store ready proposals for the slots free now (never waiting for a fit),
        top up quasi-random studies, and start computing the next proposals of the studies
        that changed. Returns the trials stored."""
        self._collect()
        added = self._top_up_quasi_random()
        todo = []
        for study in self.store.list_studies():
            if stored_study(study).spec.search != Search.BAYESIAN:
                continue
            ask = self._ask(study, slots)
            if ask is None:  # its budget is spent
                self.ahead.pop(study.id, None)
                continue
            new = self._take(ask, slots)
            if new:
                added += new
                ask = self._ask(study, slots)  # the trials just stored are pending now
            if ask is not None and self._wanted.get(study.id) != (print_ := fingerprint(ask)):
                todo.append((ask, print_))
        self._start(todo)
        return added

    def _ask(self, study: Study, slots: int) -> BayesAsk | None:
        """The study's request as stored now: a slot's worth of trials beyond those pending."""
        trials = self.store.list_trials(study.id)
        hyper = load_gp_hyper(self.store.get_meta(gp_meta_key(study.id)))
        return bayes_ask(study, study_spec(study), trials, max(1, slots), hyper)

    def _take(self, ask: BayesAsk, slots: int) -> list[Trial]:
        """Store the ready proposals of one study for its free slots."""
        ahead = self.ahead.get(ask.study.id)
        free = slots - sum(1 for t in ask.existing if occupies_slot(t))
        if ahead is None or free <= 0 or not ahead.usable(ask.existing):
            return []
        count = min(free, ask.n, len(ahead.proposal.trials) - ahead.taken)
        new = commit_bayes(self.store, ahead.proposal, ahead.taken, count)
        ahead.taken += count
        ahead.added |= {t.id for t in new}
        return new

    def _start(self, todo: list[tuple[BayesAsk, Fingerprint]]) -> None:
        """Compute the proposals of the studies that changed, in the background (if a fit is
        running already, the next round starts what changed meanwhile)."""
        if not todo or self.busy():
            return
        for ask, print_ in todo:
            self._wanted[ask.study.id] = print_
        self._thread = threading.Thread(target=self._run, args=(todo,), name="bayes-suggest", daemon=True)
        self._thread.start()

    def _run(self, todo: list[tuple[BayesAsk, Fingerprint]]) -> None:
        for ask, print_ in todo:
            try:
                proposal: BayesProposal | None = self.compute(ask)
            except Exception:  # a bad study must not stop the others, nor the engine
                log.exception("bayesian search for study %s failed", ask.study.name)
                proposal = None
            with self._lock:
                self._done.append((ask, print_, proposal))

    def _collect(self) -> None:
        """Adopt the proposals the background thread finished."""
        with self._lock:
            done, self._done = self._done, []
        for ask, _, proposal in done:
            if proposal is not None:
                self.ahead[ask.study.id] = _Ahead(proposal, frozenset(t.id for t in ask.existing))

    def _top_up_quasi_random(self) -> list[Trial]:
        """Enqueue the missing points of quasi-random studies (only a study registered with
        ``tuneplay create`` has any: ``run`` enqueues a whole study)."""
        added: list[Trial] = []
        for study in self.store.list_studies():
            spec = stored_study(study).spec
            key = (study.id, spec.budget)
            if spec.search != Search.QUASI_RANDOM or key in self._enqueued:
                continue  # a study's points, once all reserved, stay reserved: parse it once
            if study.next_index < points_per_combo(study_spec(study)):
                added += enqueue(self.store, study)
            self._enqueued.add(key)
        return added
