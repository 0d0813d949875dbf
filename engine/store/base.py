"""The storage protocol: what the engine, the CLI and the TUI may ask of a workspace.

Reads return frozen dataclasses. Writes are intents (create, enqueue, claim, finish) that
an implementation performs atomically. A finished trial (COMPLETED, FAILED, DIVERGED,
CANCELLED) is never modified again except by an explicit ``requeue``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import TuneplayError
from engine.kinds import Mode, TrialKind, Verdict

SCHEMA_VERSION = 3  # 2: trials.group_key (fusion groups); 3: leases (host, lease_token, lease_expires)
DEFAULT_LEASE_SECONDS = 60.0  # a claim's lease when the caller names none


class StoreError(TuneplayError):
    """A workspace problem a user can act on (schema mismatch, unknown name, bad state)."""


class LeaseLost(StoreError):
    """A worker's write carried a lease token its trial no longer holds (the lease expired and
    the trial was requeued or claimed again): nothing was written, and the worker stops it."""


class TrialState(str, enum.Enum):
    """A trial's lifecycle: QUEUED -> RUNNING -> one finished state (or PAUSED -> QUEUED)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DIVERGED = "DIVERGED"
    CANCELLED = "CANCELLED"

    def is_finished(self) -> bool:
        return self in FINISHED_STATES

    def is_infeasible(self) -> bool:
        """Diverged and failed trials are data about where training breaks, not noise."""
        return self in (TrialState.DIVERGED, TrialState.FAILED)


FINISHED_STATES = frozenset(
    {TrialState.COMPLETED, TrialState.FAILED, TrialState.DIVERGED, TrialState.CANCELLED}
)


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    workload: str
    created_at: float


@dataclass(frozen=True)
class Baseline:
    """One version of an experiment's baseline: a full config plus how it is judged."""

    id: int
    experiment_id: int
    version: int
    config: Mapping[str, Any]
    metric: str
    mode: Mode
    max_train_steps: int
    note: str
    created_at: float


@dataclass(frozen=True)
class Study:
    """A stored study. ``spec`` is the validated study as a JSON-able dict (see spec.py)."""

    id: int
    experiment_id: int
    name: str
    spec: Mapping[str, Any]
    seed: int
    next_index: int  # next quasi-random point index to hand out
    created_at: float
    source_path: str = ""


@dataclass(frozen=True)
class NewTrial:
    """A trial to enqueue."""

    params: Mapping[str, Any]
    seed: int
    point_index: int = -1  # the search point it came from; trials sharing it form a pairing
    kind: TrialKind = TrialKind.SEARCH
    max_train_steps: int | None = None  # None: the study's
    group_key: str = ""  # trials with the same non-empty key may train fused in one worker


@dataclass(frozen=True)
class Trial:
    id: int
    study_id: int
    number: int  # 0-based position within its study
    params: Mapping[str, Any]
    seed: int
    state: TrialState
    attempt: int
    point_index: int
    kind: str
    max_train_steps: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    device: str = ""
    worker: str = ""
    best_step: int | None = None
    best_value: float | None = None
    steps_done: int = 0
    wall_time: float = 0.0
    error: str = ""
    group_key: str = ""
    host: str = ""  # the engine host whose worker holds (or last held) the trial
    lease_token: str = ""  # set while RUNNING under a lease; "" otherwise
    lease_expires: float | None = None  # by the store's clock (``db_time``); None: never


@dataclass(frozen=True)
class MetricRow:
    trial_id: int
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class Checkpoint:
    trial_id: int
    kind: str  # "latest" | "best"
    step: int
    path: str
    value: float | None
    created_at: float


@dataclass(frozen=True)
class Decision:
    id: int
    experiment_id: int
    study_id: int | None
    verdict: Verdict
    candidate: Mapping[str, Any]
    baseline_version: int
    test: str
    stats: Mapping[str, Any]
    rationale: str
    complexity_note: str
    created_at: float


@dataclass(frozen=True)
class TrialProgress:
    """What a worker reports at the end of an attempt."""

    state: TrialState
    best_step: int | None = None
    best_value: float | None = None
    steps_done: int = 0
    wall_time: float = 0.0
    error: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


class Storage(Protocol):
    """Everything a workspace stores. Implementations: SQLite (the embedded default),
    PostgreSQL (shared by engines on many hosts) and memory (tests).

    Leases and fencing. ``claim_trials`` gives each claimed trial a fresh random
    ``lease_token`` and a ``lease_expires`` computed by the store's own clock
    (``db_time``), so hosts whose clocks disagree still agree on expiry. A worker renews its
    leases with ``renew`` and passes its tokens (``leases``/``lease``: trial id -> token) with
    every write it makes: metrics, checkpoint records, its trial's end. A write whose token
    is not the trial's current one (the trial left RUNNING, or was requeued and claimed
    again) writes nothing for that trial. Whenever a trial leaves RUNNING its token and
    expiry are cleared, so no late write under an old token can land. Writes without
    ``leases`` (the CLI, the engine's own bookkeeping, tests) are not fenced.
    """

    # experiments and baselines
    def create_experiment(self, name: str, workload: str) -> Experiment: ...
    def get_experiment(self, experiment_id: int) -> Experiment: ...
    def find_experiment(self, name: str) -> Experiment | None: ...
    def list_experiments(self) -> list[Experiment]: ...
    def add_baseline(
        self, experiment_id: int, config: Mapping[str, Any], metric: str, mode: str,
        max_train_steps: int, note: str = "",
    ) -> Baseline: ...
    def list_baselines(self, experiment_id: int) -> list[Baseline]: ...

    # studies
    def create_study(
        self, experiment_id: int, name: str, spec: Mapping[str, Any], seed: int,
        source_path: str = "",
    ) -> Study: ...
    def get_study(self, study_id: int) -> Study: ...
    def find_study(self, name: str) -> Study | None: ...
    def list_studies(self, experiment_id: int | None = None) -> list[Study]: ...
    def update_study_spec(self, study_id: int, spec: Mapping[str, Any]) -> Study: ...
    def reserve_points(self, study_id: int, n: int) -> int:
        """Atomically advance ``next_index`` by ``n``; return the first reserved index."""
        ...

    # trials
    def add_trials(self, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]: ...
    def get_trial(self, trial_id: int) -> Trial: ...
    def list_trials(
        self, study_id: int | None = None, states: Iterable[TrialState] | None = None
    ) -> list[Trial]: ...
    def add_running(self, study_id: int, trials: Sequence[NewTrial], worker: str) -> list[Trial]:
        """Create trials already RUNNING (attempt 1) for ``worker``, outside any engine (ask/tell):
        they hold no lease, so they never expire; no engine claims them."""
        ...
    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False, *, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (oldest first) to RUNNING.

        A trial is handed to exactly one caller; ``attempt`` goes up by one. With ``group``,
        the claim is the oldest queued trial plus up to ``limit - 1`` more that share its
        non-empty ``group_key`` (a group that can train fused). Each claimed trial gets
        ``host``, a new ``lease_token`` and ``lease_expires = db_time() + lease_seconds``.
        """
        ...
    def renew(
        self, leases: Mapping[int, str], steps_done: Mapping[int, Any] | None = None, *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> dict[int, TrialState | None]:
        """Renew held leases (``lease_expires = db_time() + lease_seconds``), marking the trials
        alive and recording progress as ``heartbeat`` does.

        Returns, per given trial: RUNNING while its lease is held; its state when it has
        finished (a user's cancel); None when the lease is lost (expired and requeued, or
        claimed again). Trials not held are not touched.
        """
        ...
    def expired_leases(self) -> list[Trial]:
        """RUNNING trials whose lease expired by the store's clock (trials without a lease,
        such as asked ones, never expire)."""
        ...
    def db_time(self) -> float:
        """The store's clock, epoch seconds (the PostgreSQL server's; this host's for SQLite)."""
        ...
    def heartbeat(self, trial_ids: Sequence[int], steps_done: Mapping[int, Any] | None = None) -> dict[int, TrialState]:
        """Mark RUNNING trials alive; ``steps_done`` maps id -> steps or (steps, best_step, best_value).

        Returns the current state of each given trial (a worker learns of a cancel this way).
        """
        ...
    def has_queued(self) -> bool:
        """Whether any trial is QUEUED (cheap; workers poll it while idle)."""
        ...
    def next_queued_group_key(self) -> str | None:
        """The group key of the oldest QUEUED trial (None when nothing is queued)."""
        ...
    def finish_trial(self, trial_id: int, progress: TrialProgress, *, lease: str | None = None) -> Trial:
        """Record the end of an attempt (any state but QUEUED/RUNNING).

        Raises LeaseLost (writing nothing) when ``lease`` is given and not held."""
        ...
    def finish_trials(
        self, items: Sequence[tuple[int, TrialProgress]], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Record the end of many attempts in one write (a fused group's); trials already
        finished (e.g. cancelled meanwhile), or whose lease is not held, keep their state.
        Returns the ids recorded."""
        ...
    def set_state(
        self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState],
        leases: Mapping[int, str] | None = None,
    ) -> int:
        """Move trials to ``state`` if they are currently in one of ``only_from`` (and, with
        ``leases``, only those whose lease is held); return how many."""
        ...
    def requeue_stale(self, older_than: float) -> list[Trial]:
        """RUNNING trials whose heartbeat is older than ``older_than`` (epoch s) -> QUEUED."""
        ...

    # metrics and checkpoints
    def write_metrics(self, rows: Sequence[MetricRow], *, leases: Mapping[int, str] | None = None) -> list[int]:
        """Upsert: exactly one row per (trial, step, name); a re-reported step replaces it.

        With ``leases``, rows of trials whose lease is not held are dropped; returns the ids
        of the trials whose rows were refused (sorted; empty when all were written)."""
        ...
    def read_metrics(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]:
        """Rows ordered by (trial_id, step, name); ``since_step`` keeps steps >= it."""
        ...
    def read_metrics_columns(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> dict[str, list[Any]]:
        """As :meth:`read_metrics`, but columns ``trial_id, step, name, value`` (for DataFrames;
        much lighter than millions of MetricRow objects)."""
        ...
    def record_checkpoint(self, checkpoint: Checkpoint, *, lease: str | None = None) -> None:
        """Upsert the trial's checkpoint of this kind (LeaseLost when ``lease`` is not held)."""
        ...
    def record_checkpoints(
        self, checkpoints: Sequence[Checkpoint], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert several checkpoints in one transaction; with ``leases``, those of trials
        whose lease is not held are dropped. Returns the refused trial ids (sorted)."""
        ...
    def get_checkpoints(self, trial_id: int) -> list[Checkpoint]: ...

    # decisions
    def record_decision(
        self, experiment_id: int, study_id: int | None, verdict: str, candidate: Mapping[str, Any],
        baseline_version: int, test: str, stats: Mapping[str, Any], rationale: str,
        complexity_note: str,
    ) -> Decision: ...
    def list_decisions(self, experiment_id: int | None = None) -> list[Decision]: ...

    # engine bookkeeping (key-value, e.g. engine heartbeat, slots)
    def set_meta(self, key: str, value: str) -> None: ...
    def get_meta(self, key: str) -> str | None: ...
    def list_meta(self, prefix: str) -> dict[str, str]:
        """Every meta key starting with ``prefix`` (e.g. ``engine.host.``) and its value."""
        ...
    def delete_meta(self, key: str) -> None: ...

    def close(self) -> None: ...
