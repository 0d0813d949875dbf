"""Analysis: a study's trials and curves (pandas DataFrames) in, frozen dataclasses out.

Pure functions only: no drawing, printing or storage access. The CLI and the TUI both draw
from :func:`analyze_study`'s :class:`StudyReport` (or :func:`report_to_dict` for JSON).
"""

from __future__ import annotations

from engine.analysis.axis import AxisPlot, axis_plot, axis_plots
from engine.analysis.batch import (
    BatchProbe,
    BatchRecommendation,
    ScalingAnalysis,
    ScalingRow,
    recommend_batch_size,
    scaling_analysis,
    steps_to_target,
)
from engine.analysis.boundary import BoundaryCheck, check_boundaries, expand_range, narrow_range
from engine.analysis.budget import BestVsTrials, best_of_n_quantiles, best_vs_trials
from engine.analysis.checkpoints import BestCheckpoints, best_checkpoints
from engine.analysis.curves import (
    CurveDiagnostics,
    CurveSeries,
    TrialCurves,
    curve_diagnostics,
    diagnose_training_curve,
    diagnose_validation_curve,
)
from engine.analysis.decision import Comparison, compare, complexity_note
from engine.analysis.density import DimensionDensity, SamplingDensity, sampling_density
from engine.analysis.feasibility import Concentration, InfeasibleSummary, infeasible_summary
from engine.analysis.findings import Finding, sort_findings
from engine.analysis.frames import curves_frame, curves_frame_from_columns, trials_frame
from engine.analysis.isolation import IsolationPlot, IsolationRow, isolation_plot, isolation_plots
from engine.analysis.plan import NextRoundPlan, plan_next_round
from engine.analysis.report import BestTrial, StudyReport, analyze_study, report_to_dict
from engine.analysis.workload_checks import seed_ignored_finding, steps_past_budget_finding

__all__ = [
    "AxisPlot", "BatchProbe", "BatchRecommendation", "BestCheckpoints", "BestTrial",
    "BestVsTrials", "BoundaryCheck", "Comparison", "Concentration", "CurveDiagnostics",
    "CurveSeries", "DimensionDensity", "Finding", "InfeasibleSummary", "IsolationPlot",
    "IsolationRow", "NextRoundPlan", "SamplingDensity", "ScalingAnalysis", "ScalingRow",
    "StudyReport", "TrialCurves", "analyze_study", "axis_plot", "axis_plots",
    "best_checkpoints", "best_of_n_quantiles", "best_vs_trials", "check_boundaries", "compare",
    "complexity_note", "curve_diagnostics", "curves_frame", "curves_frame_from_columns",
    "diagnose_training_curve", "diagnose_validation_curve", "expand_range",
    "infeasible_summary", "isolation_plot", "isolation_plots", "narrow_range",
    "plan_next_round", "recommend_batch_size", "report_to_dict", "sampling_density",
    "scaling_analysis", "seed_ignored_finding", "sort_findings", "steps_past_budget_finding",
    "steps_to_target", "trials_frame",
]
