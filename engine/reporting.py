"""Load a stored study into the analysis layer: one call for the CLI report and the app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.analysis import StudyReport, analyze_study, curves_frame, trials_frame
from engine.analysis.batch import ScalingAnalysis, scaling_analysis, steps_to_target
from engine.analysis.curves import DEFAULT_CURVE_TRIALS
from engine.analysis.frames import ranked_results
from engine.failures import FailedTrial, failed_trials
from engine.spec import StudySpec
from engine.store.base import Storage, Study
from engine.workspace import study_spec

FAILURES_SHOWN = 10  # the report's latest failed trials, each with its output tail


@dataclass(frozen=True)
class LoadedStudy:
    """A study's spec, its analysis report, (when it sets a target) its batch scaling, and
    its latest failed trials with their output tails (``n_failed``: how many in all)."""

    study: Study
    spec: StudySpec
    trials: pd.DataFrame
    report: StudyReport
    scaling: ScalingAnalysis | None
    failures: tuple[FailedTrial, ...] = ()
    n_failed: int = 0


def load_report(
    store: Storage, study: Study, curve_trials: int = DEFAULT_CURVE_TRIALS,
    workspace: Path | None = None,
) -> LoadedStudy:
    """Analyse ``study``, reading curves only for the trials whose curves are diagnosed;
    with the ``workspace``, failed trials come with the last lines their program printed."""
    spec = study_spec(study)
    listed = store.list_trials(study.id)
    trials = trials_frame(listed)
    ranked = ranked_results(trials, spec.mode) if len(trials) else trials
    ids = [int(i) for i in ranked["trial_id"].iloc[:curve_trials]] if len(ranked) else []
    curves = curves_frame(store.read_metrics(trial_ids=ids)) if ids else None
    taken = [s.name for s in store.list_studies()]
    report = analyze_study(spec, trials, curves, curve_trials=curve_trials, taken_names=taken)
    failures, n_failed = failed_trials(workspace, listed, FAILURES_SHOWN)
    return LoadedStudy(study, spec, trials, report, _scaling(store, study, spec, trials),
                       tuple(failures), n_failed)


def _scaling(store: Storage, study: Study, spec: StudySpec, trials: pd.DataFrame) -> ScalingAnalysis | None:
    """Steps to reach ``target`` per batch size (learning rate re-tuned per batch size)."""
    if spec.target is None or spec.param("batch_size") is None or not len(trials):
        return None
    curves = curves_frame(store.read_metrics(study_id=study.id, names=[spec.metric]))
    steps = steps_to_target(curves, spec.metric, spec.target, spec.mode)
    frame = trials.assign(steps_to_target=trials["trial_id"].map(steps))
    return scaling_analysis(frame)
