"""The fake facade's records: experiments, baselines, studies, trials, decisions.

It also speaks the few ``Storage`` methods that :func:`engine.decisions.plan_reruns` and
:func:`engine.decisions.decide` use, so the fake's reruns and verdicts come from the real
decision code. Every timestamp comes from the fake clock, never from ``time.time()``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from engine.store.base import (
    Baseline,
    Decision,
    Experiment,
    NewTrial,
    StoreError,
    Study,
    Trial,
    TrialState,
)


class FakeStore:
    """Plain dicts of frozen records; ``clock`` gives every ``*_at`` field."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.experiments: dict[int, Experiment] = {}
        self.baselines: dict[int, list[Baseline]] = {}
        self.studies: dict[int, Study] = {}
        self.trial_rows: dict[int, Trial] = {}
        self.decisions: list[Decision] = []
        self._ids = {k: itertools.count(1) for k in ("exp", "base", "study", "trial", "dec")}

    # --------------------------------------------------------------- experiments
    def create_experiment(self, name: str, workload: str) -> Experiment:
        if any(e.name == name for e in self.experiments.values()):
            raise StoreError(f"experiment {name!r} already exists")
        exp = Experiment(next(self._ids["exp"]), name, workload, self.clock())
        self.experiments[exp.id] = exp
        self.baselines[exp.id] = []
        return exp

    def add_baseline(self, experiment_id: int, config: Mapping[str, Any], metric: str,
                     mode: str, max_train_steps: int, note: str = "") -> Baseline:
        versions = self.baselines[experiment_id]
        b = Baseline(next(self._ids["base"]), experiment_id, len(versions) + 1, dict(config),
                     metric, mode, max_train_steps, note, self.clock())
        versions.append(b)
        return b

    def list_baselines(self, experiment_id: int) -> list[Baseline]:
        return list(self.baselines.get(experiment_id, []))

    # --------------------------------------------------------------- studies
    def create_study(self, experiment_id: int, name: str, spec: Mapping[str, Any], seed: int,
                     source_path: str = "") -> Study:
        if any(s.name == name for s in self.studies.values()):
            raise StoreError(f"study {name!r} already exists")
        study = Study(next(self._ids["study"]), experiment_id, name, dict(spec), seed, 0,
                      self.clock(), source_path)
        self.studies[study.id] = study
        return study

    def find_study(self, name: str) -> Study | None:
        return next((s for s in self.studies.values() if s.name == name), None)

    def update_study(self, study_id: int, **changes: Any) -> Study:
        self.studies[study_id] = dataclasses.replace(self.studies[study_id], **changes)
        return self.studies[study_id]

    # --------------------------------------------------------------- trials
    def add_trials(self, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        study = self.studies[study_id]
        number = sum(1 for t in self.trial_rows.values() if t.study_id == study_id)
        out = []
        for nt in trials:
            t = Trial(next(self._ids["trial"]), study_id, number, dict(nt.params), nt.seed,
                      TrialState.QUEUED, 0, nt.point_index, nt.kind,
                      nt.max_train_steps or int(study.spec["max_train_steps"]), self.clock())
            self.trial_rows[t.id] = t
            out.append(t)
            number += 1
        return out

    def list_trials(self, study_id: int | None = None,
                    states: Iterable[TrialState] | None = None) -> list[Trial]:
        wanted = set(states) if states is not None else None
        return [t for t in self.trial_rows.values()
                if (study_id is None or t.study_id == study_id)
                and (wanted is None or t.state in wanted)]

    def update_trial(self, trial_id: int, **changes: Any) -> Trial:
        self.trial_rows[trial_id] = dataclasses.replace(self.trial_rows[trial_id], **changes)
        return self.trial_rows[trial_id]

    def set_state(self, trial_ids: Sequence[int], state: TrialState,
                  only_from: Iterable[TrialState], **changes: Any) -> int:
        allowed = set(only_from)
        n = 0
        for i in trial_ids:
            t = self.trial_rows.get(i)
            if t is not None and t.state in allowed:
                self.update_trial(i, state=state, **changes)
                n += 1
        return n

    # --------------------------------------------------------------- decisions
    def record_decision(self, experiment_id: int, study_id: int | None, verdict: str,
                        candidate: Mapping[str, Any], baseline_version: int, test: str,
                        stats: Mapping[str, Any], rationale: str,
                        complexity_note: str) -> Decision:
        d = Decision(next(self._ids["dec"]), experiment_id, study_id, verdict, dict(candidate),
                     baseline_version, test, _plain(stats), rationale, complexity_note,
                     self.clock())
        self.decisions.append(d)
        return d

    def read_metrics(self, trial_ids: Sequence[int] | None = None, names: Sequence[str] | None = None) -> list[Any]:
        """No stored curves: ``decide`` then judges seed reruns by their values alone."""
        return []

    def list_decisions(self, experiment_id: int | None = None) -> list[Decision]:
        return [d for d in self.decisions
                if experiment_id is None or d.experiment_id == experiment_id]


def _plain(value: Any) -> Any:
    """JSON-like copies of stats (numpy scalars -> Python numbers), as a store would keep."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
