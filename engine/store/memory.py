"""An in-memory ``Storage`` for tests and fakes: the same contract, plain dicts, one lock."""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from engine.kinds import Mode, TrialKind, Verdict
from engine.store.base import (
    DEFAULT_LEASE_SECONDS,
    SCHEMA_VERSION,
    Baseline,
    Checkpoint,
    Decision,
    Experiment,
    LeaseLost,
    MetricRow,
    NewTrial,
    StoreError,
    Study,
    Trial,
    TrialProgress,
    TrialState,
)
from engine.store.rules import (
    check_meta_key,
    check_mode,
    check_verdict,
    progress_entry,
    to_json,
    trial_max_train_steps,
)

R = TypeVar("R")


def _stored(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """What the SQLite store would give back for ``value`` (JSON round trip)."""
    return json.loads(to_json(value, what))


def _frozen_copy(record: R) -> R:
    """A copy whose mappings the caller may mutate without touching the store."""
    return copy.deepcopy(record)


class MemoryStorage:
    """``Storage`` kept in dicts; thread-safe, gone when the object is."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._experiments: dict[int, Experiment] = {}
        self._baselines: dict[int, Baseline] = {}
        self._studies: dict[int, Study] = {}
        self._trials: dict[int, Trial] = {}
        self._metrics: dict[tuple[int, int, str], float] = {}
        self._checkpoints: dict[tuple[int, str], Checkpoint] = {}
        self._decisions: dict[int, Decision] = {}
        self._meta: dict[str, str] = {"schema_version": str(SCHEMA_VERSION)}
        self._next_id: dict[str, int] = {}

    def _new_id(self, table: str) -> int:
        self._next_id[table] = self._next_id.get(table, 0) + 1
        return self._next_id[table]

    def _locked(self, fn: Callable[[], R]) -> R:
        with self._lock:
            return _frozen_copy(fn())

    def _get(self, table: dict[int, R], what: str, key: int) -> R:
        if key not in table:
            raise StoreError(f"memory: no {what} with id {key}")
        return table[key]

    def _held(self, leases: Mapping[int, str] | None, ids: Iterable[int]) -> set[int] | None:
        """Of ``ids``, those whose lease ``leases`` names is held (None: no fencing asked)."""
        if leases is None:
            return None
        out = set()
        for i in ids:
            t = self._trials.get(int(i))
            if t is not None and t.state is TrialState.RUNNING and t.lease_token \
                    and leases.get(int(i)) == t.lease_token:
                out.add(int(i))
        return out

    def _set(self, trial_id: int, **changes: Any) -> None:
        """Replace a trial's fields; leaving RUNNING gives its lease up."""
        t = replace(self._trials[trial_id], **changes)
        if t.state is not TrialState.RUNNING:
            t = replace(t, lease_token="", lease_expires=None)
        self._trials[trial_id] = t

    # ----------------------------------------------------------------- experiments

    def create_experiment(self, name: str, workload: str) -> Experiment:
        """Create an experiment; its name must be new."""
        def write() -> Experiment:
            if any(e.name == name for e in self._experiments.values()):
                raise StoreError(f"memory: an experiment named {name!r} already exists")
            exp = Experiment(self._new_id("experiments"), name, workload, time.time())
            self._experiments[exp.id] = exp
            return exp
        return self._locked(write)

    def get_experiment(self, experiment_id: int) -> Experiment:
        """The experiment with this id (StoreError when there is none)."""
        return self._locked(lambda: self._get(self._experiments, "experiment", experiment_id))

    def find_experiment(self, name: str) -> Experiment | None:
        """The experiment with this name, or None."""
        return self._locked(
            lambda: next((e for e in self._experiments.values() if e.name == name), None)
        )

    def list_experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""
        return self._locked(lambda: list(self._experiments.values()))

    def add_baseline(
        self, experiment_id: int, config: Mapping[str, Any], metric: str, mode: str,
        max_train_steps: int, note: str = "",
    ) -> Baseline:
        """Launch the experiment's next baseline version (v1 first)."""
        check_mode(mode)
        def write() -> Baseline:
            self._get(self._experiments, "experiment", experiment_id)
            version = 1 + max(
                (b.version for b in self._baselines.values() if b.experiment_id == experiment_id),
                default=0,
            )
            baseline = Baseline(
                self._new_id("baselines"), experiment_id, version,
                _stored(config, "baseline config"), metric, Mode(mode), int(max_train_steps), note,
                time.time(),
            )
            self._baselines[baseline.id] = baseline
            return baseline
        return self._locked(write)

    def list_baselines(self, experiment_id: int) -> list[Baseline]:
        """The experiment's baselines by version."""
        return self._locked(lambda: sorted(
            (b for b in self._baselines.values() if b.experiment_id == experiment_id),
            key=lambda b: b.version,
        ))

    # ----------------------------------------------------------------- studies

    def create_study(
        self, experiment_id: int, name: str, spec: Mapping[str, Any], seed: int,
        source_path: str = "",
    ) -> Study:
        """Create a study; study names are unique across the workspace."""
        def write() -> Study:
            self._get(self._experiments, "experiment", experiment_id)
            if any(s.name == name for s in self._studies.values()):
                raise StoreError(f"memory: a study named {name!r} already exists")
            study = Study(
                self._new_id("studies"), experiment_id, name, _stored(spec, "study spec"),
                int(seed), 0, time.time(), source_path,
            )
            self._studies[study.id] = study
            return study
        return self._locked(write)

    def get_study(self, study_id: int) -> Study:
        """The study with this id (StoreError when there is none)."""
        return self._locked(lambda: self._get(self._studies, "study", study_id))

    def find_study(self, name: str) -> Study | None:
        """The study with this name, or None."""
        return self._locked(
            lambda: next((s for s in self._studies.values() if s.name == name), None)
        )

    def list_studies(self, experiment_id: int | None = None) -> list[Study]:
        """Studies (of one experiment, or all), oldest first."""
        return self._locked(lambda: [
            s for s in self._studies.values()
            if experiment_id is None or s.experiment_id == experiment_id
        ])

    def update_study_spec(self, study_id: int, spec: Mapping[str, Any]) -> Study:
        """Replace the study's stored spec."""
        def write() -> Study:
            study = self._get(self._studies, "study", study_id)
            self._studies[study_id] = replace(study, spec=_stored(spec, "study spec"))
            return self._studies[study_id]
        return self._locked(write)

    def reserve_points(self, study_id: int, n: int) -> int:
        """Atomically advance ``next_index`` by ``n``; return the first reserved index."""
        if n < 0:
            raise StoreError(f"reserve_points: n must be >= 0, got {n}")
        def write() -> int:
            study = self._get(self._studies, "study", study_id)
            self._studies[study_id] = replace(study, next_index=study.next_index + n)
            return study.next_index
        return self._locked(write)

    # ----------------------------------------------------------------- trials

    def add_trials(self, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        """Enqueue trials; each gets the next 0-based number within its study."""
        def write() -> list[Trial]:
            study = self._get(self._studies, "study", study_id)
            number = sum(1 for t in self._trials.values() if t.study_id == study_id)
            # validate everything before storing anything, as the SQLite transaction does
            steps = [trial_max_train_steps(study, new) for new in trials]
            params = [_stored(new.params, "trial params") for new in trials]
            added, now = [], time.time()
            for offset, new in enumerate(trials):
                trial = Trial(
                    id=self._new_id("trials"), study_id=study_id, number=number + offset,
                    params=params[offset], seed=int(new.seed),
                    state=TrialState.QUEUED, attempt=0, point_index=new.point_index,
                    kind=TrialKind(new.kind), max_train_steps=steps[offset], created_at=now,
                    group_key=new.group_key,
                )
                self._trials[trial.id] = trial
                added.append(trial)
            return added
        return self._locked(write)

    def add_running(self, study_id: int, trials: Sequence[NewTrial], worker: str) -> list[Trial]:
        """Create trials already RUNNING for ``worker`` (ask/tell): no lease, never expire."""
        with self._lock:
            added = self.add_trials(study_id, trials)
            now = time.time()
            for t in added:
                self._set(t.id, state=TrialState.RUNNING, attempt=1, worker=worker,
                          started_at=now, heartbeat_at=now)
            return self._locked(lambda: [self._trials[t.id] for t in added])

    def get_trial(self, trial_id: int) -> Trial:
        """The trial with this id (StoreError when there is none)."""
        return self._locked(lambda: self._get(self._trials, "trial", trial_id))

    def list_trials(
        self, study_id: int | None = None, states: Iterable[TrialState] | None = None
    ) -> list[Trial]:
        """Trials filtered by study and state, in insertion order."""
        wanted = None if states is None else {TrialState(s) for s in states}
        return self._locked(lambda: [
            t for t in self._trials.values()
            if (study_id is None or t.study_id == study_id)
            and (wanted is None or t.state in wanted)
        ])

    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False, *, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (oldest first) to RUNNING."""
        def write() -> list[Trial]:
            queued = [
                t for t in self._trials.values()
                if t.state is TrialState.QUEUED and (study_id is None or t.study_id == study_id)
            ]
            if group and queued:
                first = queued[0]
                same = [t for t in queued[1:] if first.group_key and t.group_key == first.group_key]
                queued = [first] + same[: max(0, limit - 1)]
            else:
                queued = queued[: max(0, limit)]
            now = time.time()
            for t in queued:
                self._trials[t.id] = replace(
                    t, state=TrialState.RUNNING, attempt=t.attempt + 1, worker=worker,
                    device=device, started_at=now, heartbeat_at=now, finished_at=None,
                    host=host, lease_token=secrets.token_hex(16), lease_expires=now + lease_seconds,
                )
            return [self._trials[t.id] for t in queued]
        return self._locked(write)

    def next_queued_group_key(self) -> str | None:
        with self._lock:
            for t in self._trials.values():
                if t.state is TrialState.QUEUED:
                    return t.group_key
            return None

    def heartbeat(
        self, trial_ids: Sequence[int], steps_done: Mapping[int, Any] | None = None
    ) -> dict[int, TrialState]:
        """Mark RUNNING trials alive and record progress; return every given trial's state."""
        now, done = time.time(), steps_done or {}
        out: dict[int, TrialState] = {}
        with self._lock:
            for trial_id in trial_ids:
                t = self._trials.get(int(trial_id))
                if t is None:
                    continue
                if t.state is TrialState.RUNNING:
                    steps, best_step, best_value = progress_entry(done.get(trial_id))
                    t = replace(
                        t, heartbeat_at=now,
                        steps_done=t.steps_done if steps is None else steps,
                        best_step=t.best_step if best_step is None else best_step,
                        best_value=t.best_value if best_value is None else best_value,
                    )
                    self._trials[int(trial_id)] = t
                out[int(trial_id)] = t.state
        return out

    def renew(
        self, leases: Mapping[int, str], steps_done: Mapping[int, Any] | None = None, *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> dict[int, TrialState | None]:
        """Renew held leases and record progress; per trial RUNNING, its finished state, or None."""
        with self._lock:
            held = self._held(leases, leases) or set()
            self.heartbeat(sorted(held), {i: v for i, v in (steps_done or {}).items() if i in held})
            now = time.time()
            out: dict[int, TrialState | None] = {}
            for i in leases:
                t = self._trials.get(int(i))
                if int(i) in held and t is not None:
                    self._trials[int(i)] = replace(t, lease_expires=now + lease_seconds)
                    out[int(i)] = TrialState.RUNNING
                else:
                    out[int(i)] = t.state if t is not None and t.state.is_finished() else None
            return out

    def expired_leases(self) -> list[Trial]:
        """RUNNING trials whose lease expired."""
        now = time.time()
        return self._locked(lambda: [
            t for t in self._trials.values() if t.state is TrialState.RUNNING
            and t.lease_expires is not None and t.lease_expires < now])

    def db_time(self) -> float:
        """This process's clock."""
        return time.time()

    def has_queued(self) -> bool:
        with self._lock:
            return any(t.state is TrialState.QUEUED for t in self._trials.values())

    def finish_trial(self, trial_id: int, progress: TrialProgress, *, lease: str | None = None) -> Trial:
        """Record the end of an attempt; a trial already finished is refused."""
        state = TrialState(progress.state)
        if state in (TrialState.QUEUED, TrialState.RUNNING):
            raise StoreError(f"finish_trial {trial_id}: {state.value} is not an end state")
        def write() -> Trial:
            t = self._get(self._trials, "trial", trial_id)
            if t.state.is_finished():
                raise StoreError(f"memory: trial {trial_id} is already {t.state.value}")
            if lease is not None and not self._held({trial_id: lease}, [trial_id]):
                raise LeaseLost(f"memory: trial {trial_id}: lease lost; its end is not recorded")
            best = None if progress.best_value is None else float(progress.best_value)
            step = None if progress.best_step is None else int(progress.best_step)
            self._set(
                trial_id, state=state, best_step=step, best_value=best,
                steps_done=int(progress.steps_done), wall_time=float(progress.wall_time),
                error=progress.error, finished_at=time.time() if state.is_finished() else None,
            )
            return self._trials[trial_id]
        return self._locked(write)

    def finish_trials(
        self, items: Sequence[tuple[int, TrialProgress]], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Record the end of many attempts at once; finished trials (and, with ``leases``, those
        whose lease is not held) are skipped."""
        for trial_id, progress in items:
            if not TrialState(progress.state).is_finished():
                raise StoreError(f"finish_trials {trial_id}: {progress.state} is not an end state")
        done = []
        with self._lock:
            held = self._held(leases, [i for i, _ in items])
            for trial_id, progress in items:
                t = self._trials.get(trial_id)
                if t is None or t.state.is_finished() or (held is not None and trial_id not in held):
                    continue
                best = None if progress.best_value is None else float(progress.best_value)
                step = None if progress.best_step is None else int(progress.best_step)
                self._set(
                    trial_id, state=TrialState(progress.state), best_step=step, best_value=best,
                    steps_done=int(progress.steps_done), wall_time=float(progress.wall_time),
                    error=progress.error, finished_at=time.time(),
                )
                done.append(trial_id)
        return done

    def set_state(
        self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState],
        leases: Mapping[int, str] | None = None,
    ) -> int:
        """Move trials to ``state`` if they are currently in one of ``only_from`` (and hold
        the lease named, with ``leases``)."""
        state, sources = TrialState(state), {TrialState(s) for s in only_from}
        finished_at = time.time() if state.is_finished() else None
        with self._lock:
            moved = 0
            held = self._held(leases, trial_ids)
            for trial_id in dict.fromkeys(trial_ids):
                t = self._trials.get(trial_id)
                if t is not None and t.state in sources and (held is None or trial_id in held):
                    self._set(trial_id, state=state, finished_at=finished_at)
                    moved += 1
            return moved

    def requeue_stale(self, older_than: float) -> list[Trial]:
        """RUNNING trials whose heartbeat (or start) is older than ``older_than`` -> QUEUED."""
        def write() -> list[Trial]:
            stale = [
                t for t in self._trials.values() if t.state is TrialState.RUNNING
                and (t.heartbeat_at or t.started_at or 0.0) < older_than
            ]
            for t in stale:
                self._set(t.id, state=TrialState.QUEUED)
            return [self._trials[t.id] for t in stale]
        return self._locked(write)

    # ----------------------------------------------------------------- metrics, checkpoints

    def write_metrics(
        self, rows: Sequence[MetricRow], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert: exactly one row per (trial, step, name); a re-reported step replaces it.
        With ``leases``, rows of trials whose lease is not held are dropped (ids returned)."""
        with self._lock:
            for r in rows:
                self._get(self._trials, "trial", r.trial_id)
            ids = {int(r.trial_id) for r in rows}
            held = self._held(leases, ids)
            for r in rows:
                if held is None or int(r.trial_id) in held:
                    self._metrics[(int(r.trial_id), int(r.step), r.name)] = float(r.value)
            return [] if held is None else sorted(ids - held)

    def read_metrics(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]:
        """Metric rows (steps >= ``since_step`` when given) ordered by trial, step, name."""
        ids = None if trial_ids is None else set(trial_ids)
        wanted = None if names is None else set(names)
        with self._lock:
            in_study = None if study_id is None else {
                t.id for t in self._trials.values() if t.study_id == study_id
            }
            return [
                MetricRow(t, s, n, v) for (t, s, n), v in sorted(self._metrics.items())
                if (ids is None or t in ids) and (in_study is None or t in in_study)
                and (wanted is None or n in wanted) and (since_step is None or s >= since_step)
            ]

    def read_metrics_columns(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> dict[str, list[Any]]:
        """Like :meth:`read_metrics`, as columns ``trial_id, step, name, value``."""
        rows = self.read_metrics(trial_ids, study_id, names, since_step)
        return {
            "trial_id": [r.trial_id for r in rows], "step": [r.step for r in rows],
            "name": [r.name for r in rows], "value": [r.value for r in rows],
        }

    def record_checkpoint(self, checkpoint: Checkpoint, *, lease: str | None = None) -> None:
        """Upsert the trial's checkpoint of this kind (LeaseLost when ``lease`` is not held)."""
        leases = None if lease is None else {checkpoint.trial_id: lease}
        if self.record_checkpoints([checkpoint], leases=leases):
            raise LeaseLost(f"memory: trial {checkpoint.trial_id}: lease lost")

    def record_checkpoints(
        self, checkpoints: Sequence[Checkpoint], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert several checkpoints; with ``leases``, those of trials not held are dropped."""
        with self._lock:
            for c in checkpoints:
                self._get(self._trials, "trial", c.trial_id)
            ids = {c.trial_id for c in checkpoints}
            held = self._held(leases, ids)
            for c in checkpoints:
                if held is None or c.trial_id in held:
                    self._checkpoints[(c.trial_id, c.kind)] = c
            return [] if held is None else sorted(ids - held)

    def get_checkpoints(self, trial_id: int) -> list[Checkpoint]:
        """The trial's checkpoints, by kind."""
        return self._locked(lambda: [
            c for (t, _), c in sorted(self._checkpoints.items()) if t == trial_id
        ])

    # ----------------------------------------------------------------- decisions, meta

    def record_decision(
        self, experiment_id: int, study_id: int | None, verdict: str,
        candidate: Mapping[str, Any], baseline_version: int, test: str,
        stats: Mapping[str, Any], rationale: str, complexity_note: str,
    ) -> Decision:
        """Append a decision to the experiment's log."""
        check_verdict(verdict)
        def write() -> Decision:
            self._get(self._experiments, "experiment", experiment_id)
            decision = Decision(
                self._new_id("decisions"), experiment_id, study_id, Verdict(verdict),
                _stored(candidate, "decision candidate"), int(baseline_version), test,
                _stored(stats, "decision stats"), rationale, complexity_note, time.time(),
            )
            self._decisions[decision.id] = decision
            return decision
        return self._locked(write)

    def list_decisions(self, experiment_id: int | None = None) -> list[Decision]:
        """Decisions (of one experiment, or all), oldest first."""
        return self._locked(lambda: [
            d for d in self._decisions.values()
            if experiment_id is None or d.experiment_id == experiment_id
        ])

    def set_meta(self, key: str, value: str) -> None:
        """Set an engine bookkeeping value (``schema_version`` is not settable)."""
        check_meta_key(key)
        with self._lock:
            self._meta[key] = str(value)

    def get_meta(self, key: str) -> str | None:
        """An engine bookkeeping value, or None."""
        with self._lock:
            return self._meta.get(key)

    def list_meta(self, prefix: str) -> dict[str, str]:
        """Every bookkeeping key starting with ``prefix``, with its value."""
        with self._lock:
            return {k: v for k, v in sorted(self._meta.items()) if k.startswith(prefix)}

    def delete_meta(self, key: str) -> None:
        """Forget a bookkeeping value."""
        check_meta_key(key)
        with self._lock:
            self._meta.pop(key, None)

    def close(self) -> None:
        """Nothing to release."""
