"""One study, analysed: every plot's data and every finding in one :class:`StudyReport`.

The CLI's text report, its ``--format json`` (via :func:`report_to_dict`) and the TUI's
analysis screen all draw from this object, so nothing is computed twice or differently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from engine.analysis.axis import AxisPlot, axis_plots
from engine.analysis.boundary import BoundaryCheck, check_boundaries
from engine.analysis.budget import BestVsTrials, best_vs_trials
from engine.analysis.checkpoints import BestCheckpoints, best_checkpoints
from engine.analysis.curves import DEFAULT_CURVE_TRIALS, CurveDiagnostics, curve_diagnostics
from engine.analysis.density import SamplingDensity, sampling_density
from engine.analysis.feasibility import InfeasibleSummary, infeasible_summary
from engine.analysis.findings import NO_RESULTS, Finding, jsonable, sort_findings
from engine.analysis.frames import HP_PREFIX, ranked_results, search_trials, top_k_count
from engine.analysis.isolation import IsolationPlot, isolation_plots
from engine.analysis.plan import NextRoundPlan, plan_next_round
from engine.analysis.workload_checks import seed_ignored_finding, steps_past_budget_finding
from engine.spec import StudySpec


@dataclass(frozen=True)
class BestTrial:
    """The study's best feasible search trial: its id, best value and step, hyperparameters."""

    trial_id: int
    value: float
    step: float | None
    params: Mapping[str, Any]


@dataclass(frozen=True)
class StudyReport:
    """Everything the analysis stage shows for one study.

    Attributes:
        study, metric, mode, protocol: what was asked and how (``spec.protocol()``).
        n_trials, state_counts: all trials and how many are in each state; ``n_reruns`` how
            many of them are seed reruns (of its best points and of the baseline).
        n_feasible: completed search trials with a result; ``top_k`` how many count as best;
            ``top_trial_ids`` those, best first; ``best`` the very best.
        axis_plots: one per searched hyperparameter.
        boundaries: one per range hyperparameter (empty with < 3 results).
        density, curves, best_checkpoints, infeasible, best_vs_trials: None when there is
            not enough data yet; ``isolation`` one plot per scientific hyperparameter.
        findings: every finding of every part, warn first, then info, then ok; also what the
            trials say about the workload itself (``seed_ignored``: its seed reruns came out
            identical; ``steps_past_budget``: it ran past max_train_steps).
        next_round: the one plan all findings resolve into (training length, budget, each
            range) with its study file (:mod:`engine.analysis.plan`); None with < 3 results.
    """

    study: str
    metric: str
    mode: str
    protocol: str
    n_trials: int
    n_reruns: int
    state_counts: Mapping[str, int]
    n_feasible: int
    top_k: int
    top_trial_ids: tuple[int, ...]
    best: BestTrial | None
    axis_plots: tuple[AxisPlot, ...]
    boundaries: tuple[BoundaryCheck, ...]
    density: SamplingDensity | None
    curves: CurveDiagnostics | None
    isolation: tuple[IsolationPlot, ...]
    best_checkpoints: BestCheckpoints | None
    infeasible: InfeasibleSummary | None
    best_vs_trials: BestVsTrials | None
    findings: tuple[Finding, ...]
    next_round: NextRoundPlan | None = None

    def findings_of(self, kind: str) -> tuple[Finding, ...]:
        """The findings of one kind (e.g. ``"boundary"``)."""
        return tuple(f for f in self.findings if f.kind == kind)


def analyze_study(
    spec: StudySpec, trials_df: pd.DataFrame, curves_df: pd.DataFrame | None = None,
    top_k: int | None = None, curve_trials: int = DEFAULT_CURVE_TRIALS,
    train_metric: str = "train_loss", taken_names: Collection[str] = (),
) -> StudyReport:
    """Run every analysis of the playbook's analysis stage on one study.

    Args:
        spec: the study (ranges, roles, metric, mode, max_train_steps).
        trials_df: :func:`engine.analysis.frames.trials_frame` of its trials.
        curves_df: :func:`engine.analysis.frames.curves_frame` of their metrics (optional;
            only the best ``curve_trials`` trials' rows are read).
        top_k: how many trials count as "the best" (default max(3, 10% of feasible)).
        train_metric: the training-loss metric name for the rising-loss check.
        taken_names: study names in use, which the next round's study must not take.
    """
    ranked = ranked_results(trials_df, spec.mode)
    k = top_k_count(len(ranked)) if top_k is None else max(1, min(top_k, len(ranked)))
    curves = None
    if curves_df is not None and len(curves_df) and len(ranked):
        curves = curve_diagnostics(curves_df, trials_df, spec, curve_trials, train_metric)
    boundaries = check_boundaries(trials_df, spec, top_k)
    density = sampling_density(trials_df, spec)
    isolation = isolation_plots(trials_df, spec)
    checkpoints = best_checkpoints(trials_df, spec)
    infeasible = infeasible_summary(trials_df, spec)
    budget = best_vs_trials(trials_df, spec)
    findings = [b.finding for b in boundaries]
    findings += [density.finding] if density else []
    findings += list(curves.findings) if curves else []
    findings += [p.finding for p in isolation if p.finding is not None]
    findings += [part.finding for part in (checkpoints, infeasible, budget) if part is not None]
    findings += [f for f in (seed_ignored_finding(trials_df, spec),
                             steps_past_budget_finding(trials_df, spec)) if f is not None]
    if not len(ranked):
        findings.insert(0, Finding(NO_RESULTS, "info", f"No completed trials of {spec.name!r} "
                                   "with a result yet: analysis needs finished trials.", "study"))
    counts = trials_df["state"].value_counts()
    plan = plan_next_round(spec, n_feasible=len(ranked), boundaries=boundaries, density=density,
                           curves=curves, checkpoints=checkpoints, budget=budget,
                           taken_names=taken_names)
    return StudyReport(
        study=spec.name, metric=spec.metric, mode=spec.mode, protocol=spec.protocol(),
        n_trials=len(trials_df), n_reruns=len(trials_df) - len(search_trials(trials_df)),
        state_counts={str(s): int(n) for s, n in counts.items()},
        n_feasible=len(ranked), top_k=k, top_trial_ids=tuple(ranked["trial_id"].iloc[:k].tolist()),
        best=_best(ranked), axis_plots=axis_plots(trials_df, spec, k), boundaries=boundaries,
        density=density, curves=curves, isolation=isolation, best_checkpoints=checkpoints,
        infeasible=infeasible, best_vs_trials=budget, findings=sort_findings(findings),
        next_round=plan,
    )


def _best(ranked: pd.DataFrame) -> BestTrial | None:
    if not len(ranked):
        return None
    row = ranked.iloc[0]
    params = {c[len(HP_PREFIX):]: _plain(row[c]) for c in ranked.columns if c.startswith(HP_PREFIX)}
    step = float(row["best_step"])
    return BestTrial(int(row["trial_id"]), float(row["best_value"]),
                     None if math.isnan(step) else step, params)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def report_to_dict(report: StudyReport) -> dict[str, Any]:
    """The report as plain JSON-able data (``json.dumps`` works; NaN becomes null).

    ``next_round`` (the plan, with its study file as ``draft``) comes right after what was
    asked; ``findings`` lists every finding once (kind, severity, subject, trial_ids,
    message, evidence); the other keys carry each plot's data (its findings are not repeated
    there).
    """
    out: dict[str, Any] = {k: getattr(report, k) for k in ("study", "metric", "mode", "protocol")}
    out["next_round"] = jsonable(_strip_findings(report.next_round))
    for field in dataclasses.fields(report):
        if field.name in out:
            continue
        value = getattr(report, field.name)
        if field.name == "findings":
            out["findings"] = [f.to_dict() for f in value]
        else:
            out[field.name] = jsonable(_strip_findings(value))
    return out


def _strip_findings(value: Any) -> Any:
    """Plot data without the nested findings (they are listed once, at the top level)."""
    if isinstance(value, tuple):
        if value and not (dataclasses.is_dataclass(value[0]) or isinstance(value[0], tuple)):
            return list(value)  # plain numbers/values: no findings inside
        return [_strip_findings(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _strip_findings(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in ("finding", "findings")}
    return value
