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

SCHEMA_VERSION = 2  # 2: trials.group_key (fusion groups)


class StoreError(Exception):
    """A workspace problem a user can act on (schema mismatch, unknown name, bad state)."""


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
    mode: str  # "min" | "max"
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
    kind: str = "search"  # "search" | "rerun" | "baseline"
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
    verdict: str  # "adopt" | "reject" | "inconclusive"
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
    """Everything a workspace stores. Implementations: SQLite (real) and memory (tests)."""

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
    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False,
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (oldest first) to RUNNING.

        A trial is handed to exactly one caller; ``attempt`` goes up by one. With ``group``,
        the claim is the oldest queued trial plus up to ``limit - 1`` more that share its
        non-empty ``group_key`` (a group that can train fused).
        """
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
    def finish_trial(self, trial_id: int, progress: TrialProgress) -> Trial:
        """Record the end of an attempt (any state but QUEUED/RUNNING)."""
        ...
    def finish_trials(self, items: Sequence[tuple[int, TrialProgress]]) -> list[int]:
        """Record the end of many attempts in one write (a fused group's); trials already
        finished (e.g. cancelled meanwhile) keep their state. Returns the ids recorded."""
        ...
    def set_state(self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState]) -> int:
        """Move trials to ``state`` if they are currently in one of ``only_from``; return how many."""
        ...
    def requeue_stale(self, older_than: float) -> list[Trial]:
        """RUNNING trials whose heartbeat is older than ``older_than`` (epoch s) -> QUEUED."""
        ...

    # metrics and checkpoints
    def write_metrics(self, rows: Sequence[MetricRow]) -> None:
        """Upsert: exactly one row per (trial, step, name); a re-reported step replaces it."""
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
    def record_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Upsert the trial's checkpoint of this kind."""
        ...
    def record_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Upsert several checkpoints in one transaction."""
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

    def close(self) -> None: ...
