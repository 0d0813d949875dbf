"""The one small surface the TUI reads and writes through (and a fake implements in tests).

The app never runs SQL, trains, or analyses by itself: it asks this facade. Every method is
safe to call from a worker thread; slow ones (analysis, probes, launching) are meant to be.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.store.base import Baseline, Decision, Experiment, MetricRow, Study, Trial


@dataclass(frozen=True)
class StudySummary:
    study: Study
    counts: Mapping[str, int]  # TrialState value -> n
    total: int
    best_value: float | None
    best_trial_id: int | None
    reruns: tuple[int, int] = (0, 0)  # (finished, all) of its seed reruns, counted in ``total``


@dataclass(frozen=True)
class ExperimentSummary:
    experiment: Experiment
    baselines: tuple[Baseline, ...]
    studies: tuple[StudySummary, ...]
    decisions: tuple[Decision, ...]


@dataclass(frozen=True)
class Snapshot:
    """The whole workspace at a glance, cheap enough to poll every second."""

    workspace: str
    engine_running: bool
    engine_pid: int | None
    slots: tuple[str, ...]
    experiments: tuple[ExperimentSummary, ...]
    taken_at: float = field(default_factory=time.time)
    engine_note: str | None = None  # why a running engine claims nothing ("disk full: …")
    hosts: tuple[str, ...] = ()  # the engine hosts serving a shared store (empty with SQLite)


@dataclass(frozen=True)
class DeviceUsage:
    name: str
    utilization: float | None  # 0..100
    memory_used: float | None  # bytes
    memory_total: float | None


class EngineFacade(Protocol):
    """What the app may ask of the engine."""

    workspace: Path

    def snapshot(self) -> Snapshot: ...
    def trials(self, study_id: int) -> list[Trial]: ...
    def curves(
        self, trial_ids: Sequence[int], metrics: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]: ...
    def output_tail(self, trial_id: int, lines: int = 5) -> list[str]:
        """The last ``lines`` lines a command trial printed (its ``output.log``); [] for a
        Python workload's trial, which has none. See :func:`engine.trial_output.output_tail`."""
        ...
    def devices(self) -> list[DeviceUsage]: ...
    def start_engine(self) -> None: ...
    def workloads(self) -> list[Any]:
        """Built-in WorkloadInfo objects (engine.workloads.base)."""
        ...
    def baseline_design(self, experiment_id: int) -> dict[str, Any]:
        """A starting study design (TOML-able dict) from the latest baseline's config."""
        ...
    def validate_study_text(self, text: str, path: str) -> Any:
        """A StudySpec, or raise engine.spec.SpecError (one-line message)."""
        ...
    def preview(self, spec: Any, n: int | None = None) -> list[dict[str, Any]]: ...
    def save_and_launch(self, text: str, path: str) -> Study:
        """Write the study file, create/continue the study, enqueue, start the engine."""
        ...
    def launch_file(self, path: str) -> Study: ...
    def cancel(self, trial_ids: Sequence[int]) -> int: ...
    def pause(self, trial_ids: Sequence[int]) -> int: ...
    def requeue(self, trial_ids: Sequence[int]) -> int: ...
    def add_trials(self, study_id: int, n_points: int) -> int: ...
    def set_slots(self, cpu_slots: int | None, slots_per_gpu: int) -> None: ...
    def analyze(self, study_id: int) -> Any:
        """engine.analysis.StudyReport for the study."""
        ...
    def rerun(self, study_id: int, best_k: int, seeds: int) -> int: ...
    def decide(self, study_id: int, adopt: bool = False) -> Any:
        """engine.decisions.DecisionResult."""
        ...
    def run_baseline(self, experiment_id: int) -> Study: ...
    def save_baseline(self, experiment_id: int, config: Mapping[str, Any], note: str = "") -> Baseline:
        """A new baseline version with this config (metric, mode and steps carried over)."""
        ...
    def create_experiment(
        self, name: str, workload: str, config: Mapping[str, Any], metric: str, mode: str, max_train_steps: int,
    ) -> Experiment: ...
    def probe_batch(self, workload: str, max_batch: int = 1024) -> Any:
        """engine.analysis.BatchRecommendation for the workload on this machine."""
        ...
