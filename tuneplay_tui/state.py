"""What the app knows about the workspace, and what is selected: one plain object.

The poller's messages update it on the UI thread; screens read from it. Nothing here
touches Textual, so the rules (which study is "the latest", what the stage strip shows)
are plain functions of the data.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from engine.facade import DeviceUsage, ExperimentSummary, Snapshot, StudySummary
from engine.store.base import Baseline, Decision, Study, Trial, TrialState
from tuneplay_tui.messages import CurveData

STAGES: tuple[str, ...] = ("baseline", "design", "running", "analysis", "decision")
STAGE_TITLES: dict[str, str] = {
    "home": "Home", "baseline": "Baseline", "design": "Design", "running": "Running",
    "analysis": "Analysis", "decision": "Decision",
}
ACTIVE = ("RUNNING", "QUEUED", "PAUSED")
HISTORY = 8  # utilisation samples kept per device


def is_baseline_run(study: Study) -> bool:
    """A study that runs the baseline config itself (stage 1), not a search: marked so when
    stored. Runs stored before the mark existed are known by the exact name the app gave
    them (``<experiment>-baseline-v<N>``, one trial): a study's name alone never hides it."""
    kind = study.spec.get("kind")
    if kind is not None:
        return kind == "baseline"
    return bool(re.search(r"-baseline-v\d+$", study.name)) and study.spec.get("budget") == 1


def finished_count(counts: Any) -> int:
    return sum(int(counts.get(s.value, 0)) for s in TrialState if s.is_finished())


class AppState:
    """The latest snapshot, the followed study's trials/curves, and the selection."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.experiment_id: int | None = None
        self.study_id: int | None = None
        self.pinned = False  # the user picked the study: do not follow "the latest"
        self.trials: dict[int, list[Trial]] = {}
        self.curves: CurveData = {}
        self.curves_version = 0
        self.devices: Sequence[DeviceUsage] = ()
        self.device_history: dict[str, deque[float]] = {}
        self.error: str | None = None

    # ------------------------------------------------------------------ updates
    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.error = None
        ids = {e.experiment.id for e in snapshot.experiments}
        if self.experiment_id not in ids:
            self.experiment_id = self._default_experiment()
            self.pinned = False
        studies = {s.study.id for s in self.search_studies()}
        if not self.pinned or self.study_id not in studies:
            latest = self.search_studies()
            self.study_id = latest[-1].study.id if latest else None

    def apply_devices(self, devices: Sequence[DeviceUsage]) -> None:
        self.devices = devices
        for d in devices:
            hist = self.device_history.setdefault(d.name, deque(maxlen=HISTORY))
            if d.utilization is not None:
                hist.append(d.utilization)

    def select_experiment(self, experiment_id: int) -> None:
        self.experiment_id = experiment_id
        self.pinned = False
        latest = self.search_studies()
        self.study_id = latest[-1].study.id if latest else None

    def select_study(self, study_id: int) -> None:
        for exp in self.snapshot.experiments if self.snapshot else ():
            if any(s.study.id == study_id for s in exp.studies):
                self.experiment_id = exp.experiment.id
        self.study_id = study_id
        self.pinned = True

    def _default_experiment(self) -> int | None:
        """The experiment with the most recent study (or the newest experiment)."""
        if not self.snapshot or not self.snapshot.experiments:
            return None
        def newest(e: ExperimentSummary) -> tuple[float, int]:
            times = [s.study.created_at for s in e.studies] or [e.experiment.created_at]
            return (max(times), e.experiment.id)
        return max(self.snapshot.experiments, key=newest).experiment.id

    # ------------------------------------------------------------------ reads
    def experiment(self) -> ExperimentSummary | None:
        for e in self.snapshot.experiments if self.snapshot else ():
            if e.experiment.id == self.experiment_id:
                return e
        return None

    def baseline(self) -> Baseline | None:
        exp = self.experiment()
        return exp.baselines[-1] if exp and exp.baselines else None

    def search_studies(self) -> list[StudySummary]:
        exp = self.experiment()
        if exp is None:
            return []
        return sorted((s for s in exp.studies if not is_baseline_run(s.study)),
                      key=lambda s: (s.study.created_at, s.study.id))

    def baseline_runs(self) -> list[StudySummary]:
        exp = self.experiment()
        return [s for s in exp.studies if is_baseline_run(s.study)] if exp else []

    def study_summary(self, study_id: int | None = None) -> StudySummary | None:
        sid = self.study_id if study_id is None else study_id
        for exp in self.snapshot.experiments if self.snapshot else ():
            for s in exp.studies:
                if s.study.id == sid:
                    return s
        return None

    def study(self) -> Study | None:
        s = self.study_summary()
        return s.study if s else None

    def study_trials(self) -> list[Trial]:
        return self.trials.get(self.study_id, []) if self.study_id is not None else []

    def decisions(self) -> tuple[Decision, ...]:
        exp = self.experiment()
        return exp.decisions if exp else ()

    def study_decisions(self) -> list[Decision]:
        return [d for d in self.decisions() if d.study_id == self.study_id]

    def active_trials(self) -> int:
        """Trials the engine still has to run (all experiments): running, queued, paused."""
        n = 0
        for exp in self.snapshot.experiments if self.snapshot else ():
            for s in exp.studies:
                n += sum(int(s.counts.get(k, 0)) for k in ("RUNNING", "QUEUED"))
        return n

    # ------------------------------------------------------------------ the frame
    def stage_marks(self) -> dict[str, str]:
        """``✓`` done, ``●`` live, ``""`` not yet, per stage of the selected experiment."""
        marks = dict.fromkeys(STAGES, "")
        runs = self.baseline_runs()
        if runs:  # stage 1 is done once the baseline has been run (and, the screen says, beats chance)
            live = any(finished_count(r.counts) < r.total for r in runs)
            marks["baseline"] = "●" if live else "✓"
        s = self.study_summary()
        if s is None:
            return marks
        marks["design"] = "✓"
        done = finished_count(s.counts)
        if done < s.total:
            marks["running"] = "●"
            marks["analysis"] = "●" if int(s.counts.get("COMPLETED", 0)) else ""
        elif s.total:
            marks["running"] = "✓"
            # nothing to analyse when no trial completed (all cancelled or failed)
            marks["analysis"] = "✓" if int(s.counts.get("COMPLETED", 0)) else ""
        trials = self.study_trials()
        reruns = [t for t in trials if t.kind in ("rerun", "baseline")]
        if self.study_decisions():
            marks["decision"] = "✓"
        elif any(not t.state.is_finished() for t in reruns):
            marks["decision"] = "●"
        return marks

    def study_status(self) -> str:
        """``running 14/32`` / ``finished 32/32`` / ``queued 0/24`` for the selected study."""
        s = self.study_summary()
        if s is None:
            return ""
        done = finished_count(s.counts)
        if done >= s.total and s.total and s.counts.get("CANCELLED", 0) == s.total:
            word = "cancelled"
        elif done >= s.total and s.total:
            word = "finished"
        elif s.counts.get("RUNNING"):
            word = "running"
        elif s.counts.get("PAUSED") and not s.counts.get("QUEUED"):
            word = "paused"
        else:
            word = "queued"
        rerun_done, rerun_total = s.reruns
        return f"{word} {done - rerun_done}/{s.total - rerun_total}" + (
            f" · reruns {rerun_done}/{rerun_total}" if rerun_total else "")

    def study_eta(self, now: float) -> float | None:
        """Seconds until the followed study's running and queued trials are done, from
        their measured step rates over the slots they run on (:func:`engine.status.
        estimate_eta`, which ``tuneplay status`` uses too)."""
        from engine.status import estimate_eta

        return estimate_eta(self.study_trials(), now=now, slots=self.study_slots())

    def study_slots(self) -> int | None:
        """The engine's slots the followed study can have: all but those other studies'
        trials hold now (None when unknown)."""
        snap = self.snapshot
        if snap is None or not snap.slots:
            return None
        elsewhere = sum(int(s.counts.get("RUNNING", 0)) for e in snap.experiments
                        for s in e.studies if s.study.id != self.study_id)
        return max(len(snap.slots) - elsewhere, 0) or None

    def engine_line(self) -> tuple[str, str]:
        """The engine's status for the header and its severity (``ok|warn|error``)."""
        if self.error is not None:
            return "engine ✗ unreachable", "error"
        snap = self.snapshot
        if snap is None:
            return "engine …", "warn"
        if not snap.engine_running:
            return "engine ○ stopped", "warn"
        if snap.engine_note:  # running, but claiming nothing until it is resolved
            return f"engine ‖ paused: {snap.engine_note}", "error"
        if snap.hosts:  # engines of a shared store, on many hosts
            n = len(snap.hosts)
            return f"engine ● {n} host{'s' if n != 1 else ''} · {len(snap.slots)} slots", "ok"
        gpus = {s.split(".")[0] for s in snap.slots if not s.startswith("cpu")}
        where = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "CPU"
        return f"engine ● {where} · {len(snap.slots)} slots", "ok"

    def state_counts(self) -> Counter[str]:
        return Counter(t.state.value for t in self.study_trials())
