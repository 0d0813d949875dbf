"""Load a stored study into the analysis layer: one call for the CLI report and the app."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from engine.analysis import StudyReport, analyze_study, curves_frame, trials_frame
from engine.analysis.batch import ScalingAnalysis, scaling_analysis, steps_to_target
from engine.analysis.curves import DEFAULT_CURVE_TRIALS
from engine.analysis.frames import ranked_results
from engine.spec import StudySpec
from engine.store.base import Storage, Study
from engine.workspace import study_spec


@dataclass(frozen=True)
class LoadedStudy:
    """A study's spec, its analysis report, and (when it sets a target) its batch scaling."""

    study: Study
    spec: StudySpec
    trials: pd.DataFrame
    report: StudyReport
    scaling: ScalingAnalysis | None


def load_report(store: Storage, study: Study, curve_trials: int = DEFAULT_CURVE_TRIALS) -> LoadedStudy:
    """Analyse ``study``, reading curves only for the trials whose curves are diagnosed."""
    spec = study_spec(study)
    trials = trials_frame(store.list_trials(study.id))
    ranked = ranked_results(trials, spec.mode) if len(trials) else trials
    ids = [int(i) for i in ranked["trial_id"].iloc[:curve_trials]] if len(ranked) else []
    curves = curves_frame(store.read_metrics(trial_ids=ids)) if ids else None
    report = analyze_study(spec, trials, curves, curve_trials=curve_trials)
    return LoadedStudy(study, spec, trials, report, _scaling(store, study, spec, trials))


def _scaling(store: Storage, study: Study, spec: StudySpec, trials: pd.DataFrame) -> ScalingAnalysis | None:
    """Steps to reach ``target`` per batch size (learning rate re-tuned per batch size)."""
    if spec.target is None or spec.param("batch_size") is None or not len(trials):
        return None
    curves = curves_frame(store.read_metrics(study_id=study.id, names=[spec.metric]))
    steps = steps_to_target(curves, spec.metric, spec.target, spec.mode)
    frame = trials.assign(steps_to_target=trials["trial_id"].map(steps))
    return scaling_analysis(frame)
