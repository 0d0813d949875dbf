"""Study analysis on trial data built with known answers: frames, axis plots, boundaries,
sampling density, isolation, best checkpoints, infeasible fraction, budget, the report."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.analysis import (
    analyze_study,
    axis_plot,
    best_checkpoints,
    best_of_n_quantiles,
    best_vs_trials,
    check_boundaries,
    curves_frame,
    expand_range,
    infeasible_summary,
    isolation_plots,
    report_to_dict,
    sampling_density,
    trials_frame,
)
from engine.analysis.budget import sample_best_of_n
from engine.space import ChoiceParam, RangeParam
from engine.spec import StudySpec
from engine.store.base import MetricRow, Trial, TrialState

LR = RangeParam("learning_rate", 1e-4, 1e-1, "log")
WD = RangeParam("weight_decay", 0.0, 1.0, "linear")
LAYERS = RangeParam("num_layers", 2, 8, "int")


def make_spec(nuisance: Sequence[Any] = (LR, WD, LAYERS), scientific: Sequence[Any] = (),
              mode: str = "min", metric: str = "val_loss",
              max_train_steps: int = 1000) -> StudySpec:
    return StudySpec(name="demo", workload="builtin:digits-mlp", metric=metric, mode=mode,
                     max_train_steps=max_train_steps, eval_every=10, budget=100,
                     nuisance=tuple(nuisance), scientific=tuple(scientific))


def make_trial(i: int, params: Mapping[str, Any], value: float | None, state: str = "COMPLETED",
               best_step: int | None = 500, kind: str = "search", max_train_steps: int = 1000,
               seed: int = 0, error: str = "") -> Trial:
    return Trial(id=i, study_id=1, number=i, params=dict(params), seed=seed,
                 state=TrialState(state), attempt=1, point_index=i, kind=kind,
                 max_train_steps=max_train_steps, created_at=0.0,
                 best_step=best_step if value is not None else None, best_value=value,
                 steps_done=max_train_steps, error=error)


def at(param: RangeParam, u: float) -> float:
    return param.from_unit(u)


def edge_study(mode: str = "min") -> tuple[StudySpec, pd.DataFrame]:
    """46 trials: 40 poor background trials and 6 best ones with learning_rate at the top of
    its range, weight_decay in the middle and num_layers at the bottom."""
    rng = np.random.default_rng(1)
    trials = []
    for i in range(40):
        u = rng.uniform(0, 1, 3)
        params = {"learning_rate": at(LR, u[0]), "weight_decay": at(WD, u[1]),
                  "num_layers": at(LAYERS, u[2])}
        trials.append(make_trial(i, params, 1.0 + rng.uniform(0, 1)))
    for j, u_lr in enumerate([0.99, 0.97, 0.95, 0.93, 0.96, 0.5]):
        params = {"learning_rate": at(LR, u_lr), "weight_decay": at(WD, 0.45 + 0.02 * j),
                  "num_layers": 2 if j < 4 else 5}
        trials.append(make_trial(100 + j, params, 0.1 + 0.01 * j))
    if mode == "max":  # accuracy-like: higher is better, same ranking
        trials = [t.__class__(**{**t.__dict__, "best_value": 2.0 - t.best_value}) for t in trials]
    return make_spec(mode=mode), trials_frame(trials)


# --- frames -----------------------------------------------------------------------------

def test_trials_frame_has_one_row_per_trial_and_hp_columns() -> None:
    trials = [make_trial(1, {"learning_rate": 0.01, "optimizer": "adam"}, 0.5),
              make_trial(2, {"learning_rate": 1.0}, None, state="DIVERGED")]
    df = trials_frame(trials)
    assert list(df["trial_id"]) == [1, 2]
    assert list(df["state"]) == ["COMPLETED", "DIVERGED"]
    expected = {"hp.learning_rate", "hp.optimizer", "best_value", "best_step", "kind"}
    assert expected <= set(df.columns)
    assert math.isnan(df["best_value"].iloc[1])
    assert trials_frame([]).empty


def test_curves_frame_from_rows_and_from_columns_agree() -> None:
    rows = [MetricRow(1, s, "val_loss", 1.0 / (s + 1)) for s in range(5)]
    a = curves_frame(rows)
    b = curves_frame({"trial_id": [1] * 5, "step": list(range(5)),
                      "metric": ["val_loss"] * 5, "value": [1.0 / (s + 1) for s in range(5)]})
    assert list(a.columns) == ["trial_id", "step", "metric", "value"]
    pd.testing.assert_frame_equal(a, b)


# --- axis plots and boundaries ------------------------------------------------------------

def test_axis_plot_marks_infeasible_trials_and_the_top_k() -> None:
    spec, df = edge_study()
    extra = trials_frame([make_trial(999, {"learning_rate": 0.09, "weight_decay": 0.1,
                                            "num_layers": 3}, None, state="DIVERGED")])
    df = pd.concat([df, extra], ignore_index=True)
    plot = axis_plot(df, spec, "learning_rate")
    assert plot.log and plot.scale == "log" and plot.role == "nuisance"
    assert len(plot.x) == len(plot.y) == len(plot.trial_ids) == 46
    assert plot.infeasible_trial_ids == (999,) and plot.infeasible_x == (0.09,)
    assert plot.infeasible_y == pytest.approx(max(plot.y))  # drawn at the cap
    assert plot.top_trial_ids == (100, 101, 102, 103, 104)  # k = max(3, ceil(4.6)) = 5


@pytest.mark.parametrize("mode", ["min", "max"])
def test_boundary_flags_upper_and_lower_edges_and_not_the_centred_range(mode: str) -> None:
    spec, df = edge_study(mode)
    checks = {c.name: c for c in check_boundaries(df, spec)}
    lr, wd, layers = checks["learning_rate"], checks["weight_decay"], checks["num_layers"]

    assert lr.edges == ("upper",) and lr.finding.kind == "boundary"
    assert lr.finding.severity == "warn" and "learning_rate" in lr.finding.message
    assert "upper edge" in lr.finding.message
    # log scale: the upper edge is multiplied by sqrt(high/low), not moved by a linear step
    assert lr.proposed_low == LR.low
    assert lr.proposed_high == pytest.approx(0.1 * math.sqrt(1000), rel=1e-4)
    assert lr.finding.evidence["proposed_high"] == pytest.approx(lr.proposed_high)

    assert wd.edges == () and wd.finding.kind == "well_inside" and wd.finding.severity == "ok"

    assert layers.edges == ("lower",) and layers.finding.severity == "warn"
    assert layers.proposed_low == 1 and isinstance(layers.proposed_low, int)
    assert layers.proposed_high == 8


def test_a_single_best_trial_at_the_edge_is_only_info() -> None:
    trials = [make_trial(i, {"learning_rate": at(LR, u)}, v)
              for i, (u, v) in enumerate([(0.99, 0.1), (0.5, 0.2), (0.4, 0.3), (0.6, 0.4),
                                          (0.3, 0.5), (0.2, 0.6)])]
    (check,) = check_boundaries(trials_frame(trials), make_spec(nuisance=(LR,)))
    assert check.edges == () and check.finding.kind == "boundary"
    assert check.finding.severity == "info"


def test_expand_range_keeps_scales_and_natural_bounds() -> None:
    assert expand_range(RangeParam("x", 1.0, 3.0), ["upper"]) == (1.0, 4.0)
    assert expand_range(RangeParam("x", 1.0, 3.0), ["lower"]) == (0.0, 3.0)  # stays >= 0
    assert expand_range(RangeParam("p", 0.1, 0.9), ["upper"]) == (0.1, 1.0)  # inside [0, 1]
    assert expand_range(RangeParam("x", -2.0, 2.0), ["lower"]) == (-4.0, 2.0)
    lo, hi = expand_range(RangeParam("lr", 1e-3, 1e-1, "log"), ["lower", "upper"])
    assert lo == pytest.approx(1e-4) and hi == pytest.approx(1.0)
    assert expand_range(RangeParam("n", 4, 16, "int_log"), ["upper"]) == (4, 32)
    assert expand_range(RangeParam("n", 4, 16, "int_log"), ["lower"]) == (2, 16)
    assert expand_range(RangeParam("n", 0, 3, "int"), ["upper"]) == (0, 5)


# --- sampling density ----------------------------------------------------------------------

def test_sparse_sampling_when_few_trials_reach_the_good_region() -> None:
    spec, df = edge_study()  # 6 good trials well apart from 40 poor ones -> dense enough
    dense = sampling_density(df, spec)
    assert dense is not None and dense.finding.kind == "dense_sampling"
    assert dense.n_good == 6

    rng = np.random.default_rng(0)
    trials = [make_trial(i, {"learning_rate": at(LR, rng.uniform())}, 1.0 + rng.uniform(0, 0.1))
              for i in range(30)]
    trials += [make_trial(50, {"learning_rate": at(LR, 0.5)}, 0.1),
               make_trial(51, {"learning_rate": at(LR, 0.52)}, 0.12)]
    sparse = sampling_density(trials_frame(trials), make_spec(nuisance=(LR,)))
    assert sparse is not None and sparse.finding.kind == "sparse_sampling"
    assert sparse.finding.severity == "warn" and sparse.n_good == 2
    (dim,) = sparse.dimensions
    assert dim.good_low == pytest.approx(at(LR, 0.5))
    assert dim.good_high == pytest.approx(at(LR, 0.52))
    assert 0 < dim.good_span < 0.05


# --- isolation ------------------------------------------------------------------------------

def test_isolation_picks_the_best_per_scientific_value_with_rerun_spread() -> None:
    opt = ChoiceParam("optimizer", ("sgd", "adam"))
    spec = make_spec(nuisance=(LR,), scientific=(opt,))
    trials = [make_trial(1, {"optimizer": "sgd", "learning_rate": 0.1}, 0.40),
              make_trial(2, {"optimizer": "sgd", "learning_rate": 0.01}, 0.30),
              make_trial(3, {"optimizer": "adam", "learning_rate": 0.001}, 0.25),
              make_trial(4, {"optimizer": "adam", "learning_rate": 0.01}, 0.35),
              make_trial(5, {"optimizer": "adam", "learning_rate": 0.09}, None, state="DIVERGED")]
    # seed reruns of trial 3's config: they give the spread, never the "best over nuisance"
    trials += [make_trial(10 + s, {"optimizer": "adam", "learning_rate": 0.001}, v,
                          kind="rerun", seed=s) for s, v in enumerate([0.26, 0.28, 0.20])]
    (plot,) = isolation_plots(trials_frame(trials), spec)
    rows = {r.value: r for r in plot.rows}
    assert [r.value for r in plot.rows] == ["sgd", "adam"]
    assert rows["sgd"].best_trial_id == 2 and rows["sgd"].best_value == 0.30
    assert rows["adam"].best_trial_id == 3 and rows["adam"].best_value == 0.25
    assert rows["adam"].n_infeasible == 1 and rows["adam"].n_trials == 3  # search trials; reruns apart
    assert rows["adam"].n_reruns == 3
    assert rows["adam"].rerun_mean == pytest.approx(np.mean([0.26, 0.28, 0.20]))
    assert rows["adam"].rerun_std == pytest.approx(np.std([0.26, 0.28, 0.20], ddof=1))
    assert rows["sgd"].n_reruns == 0 and rows["sgd"].rerun_mean is None
    assert plot.rows[plot.best_row].value == "adam"
    assert plot.finding is not None and "adam" in plot.finding.message


def test_isolation_buckets_a_continuous_scientific_axis() -> None:
    wd = RangeParam("weight_decay", 1e-5, 1e-2, "log")
    spec = make_spec(nuisance=(LR,), scientific=(wd,), mode="max", metric="val_accuracy")
    rng = np.random.default_rng(3)
    trials = [make_trial(i, {"weight_decay": at(wd, rng.uniform()), "learning_rate": 0.01},
                         float(rng.uniform())) for i in range(50)]
    df = trials_frame(trials)
    (plot,) = isolation_plots(df, spec)
    assert plot.bucketed and len(plot.rows) == 5
    assert sum(r.n_trials for r in plot.rows) == 50
    buckets = pd.qcut(df["hp.weight_decay"], 5)
    expected = df.groupby(buckets, observed=True)["best_value"].max().to_numpy()
    assert [r.best_value for r in plot.rows] == pytest.approx(list(expected))
    for r in plot.rows:  # each bucket's best trial lies inside its bounds
        x = df.loc[df.trial_id == r.best_trial_id, "hp.weight_decay"].item()
        assert r.bucket_low <= x <= r.bucket_high


# --- best checkpoints, infeasible fraction, budget ---------------------------------------------

def test_best_checkpoint_advice_early_late_and_ok() -> None:
    spec = make_spec(max_train_steps=10_000)

    def study(steps: Sequence[int]) -> pd.DataFrame:
        return trials_frame([make_trial(i, {}, 0.5, best_step=s, max_train_steps=10_000)
                             for i, s in enumerate(steps)])

    early = best_checkpoints(study([300, 500, 800, 200, 900, 6000]), spec)
    assert early is not None and early.finding.kind == "best_checkpoint_early"
    assert early.suggested_max_train_steps is not None
    assert early.suggested_max_train_steps < 10_000
    assert sum(early.counts) == 6 and early.counts[0] == 5 and len(early.bin_edges) == 11

    late = best_checkpoints(study([9999, 9800, 9000, 4000, 5000]), spec)
    assert late is not None and late.finding.kind == "best_checkpoint_late"
    assert late.suggested_max_train_steps > 10_000
    assert "decay" in late.finding.message

    ok = best_checkpoints(study([4000, 5000, 6000, 3000, 5500]), spec)
    assert ok is not None and ok.finding.severity == "ok"


def test_infeasible_fraction_and_where_it_concentrates() -> None:
    spec = make_spec(nuisance=(LR,))
    trials = [make_trial(i, {"learning_rate": at(LR, u)}, 0.5)
              for i, u in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    trials += [make_trial(10 + i, {"learning_rate": at(LR, u)}, None, state="DIVERGED")
               for i, u in enumerate([0.9, 0.95, 0.97])]
    trials += [make_trial(20, {"learning_rate": at(LR, 0.99)}, None, state="FAILED",
                          error="CUDA error"),
               make_trial(21, {"learning_rate": 0.01}, None, state="CANCELLED")]
    summary = infeasible_summary(trials_frame(trials), spec)
    assert summary is not None
    assert (summary.n_judged, summary.n_infeasible) == (10, 4)  # cancelled not judged
    assert summary.fraction == pytest.approx(0.4)
    assert summary.finding.kind == "infeasible_fraction" and summary.finding.severity == "warn"
    (conc,) = summary.concentrations
    assert conc.notable and conc.toward == "upper"
    assert "upper end of learning_rate" in summary.finding.message
    assert summary.common_error == "CUDA error"

    fine = infeasible_summary(trials_frame(trials[:6]), spec)
    assert fine is not None and fine.fraction == 0 and fine.finding.severity == "ok"


@pytest.mark.parametrize("mode", ["min", "max"])
def test_bootstrap_best_vs_trials_is_monotone_in_n(mode: str) -> None:
    rng = np.random.default_rng(7)
    trials = [make_trial(i, {}, float(rng.normal())) for i in range(40)]
    curve = best_vs_trials(trials_frame(trials), make_spec(mode=mode))
    assert curve is not None and curve.n == tuple(range(1, 81))
    med = np.array(curve.median)
    steps = np.diff(med)
    assert (steps <= 0).all() if mode == "min" else (steps >= 0).all()
    assert (np.array(curve.q10) <= med).all() and (med <= np.array(curve.q90)).all()
    assert curve.finding.kind == "budget_sensitivity"
    ev = curve.finding.evidence
    assert {"median_half", "median_observed", "median_double"} <= set(ev)


def test_exact_bootstrap_matches_the_index_matrix_bootstrap() -> None:
    scores = np.random.default_rng(2).normal(size=60)
    for n in (1, 5, 30, 120):
        draws = sample_best_of_n(scores, n, n_boot=20_000, rng=np.random.default_rng(n))
        for q in (0.1, 0.5, 0.9):
            exact = best_of_n_quantiles(scores, np.array([n]), q)[0]
            lo, hi = np.quantile(draws, [max(q - 0.03, 0), min(q + 0.03, 1)])
            assert lo <= exact <= hi


# --- the report -------------------------------------------------------------------------------

def test_report_is_json_and_lists_the_same_findings_warn_first() -> None:
    spec, df = edge_study()
    steps = np.arange(0, 1000, 10)
    rows: dict[str, list] = {"trial_id": [], "step": [], "metric": [], "value": []}
    for tid in df["trial_id"]:
        for metric, curve in (("val_loss", 0.3 + 2 * np.exp(-8 * steps / 1000)),
                              ("train_loss", 0.2 + 2 * np.exp(-8 * steps / 1000))):
            rows["trial_id"] += [tid] * len(steps)
            rows["step"] += steps.tolist()
            rows["metric"] += [metric] * len(steps)
            rows["value"] += curve.tolist()
    report = analyze_study(spec, df, curves_frame(rows))
    assert report.protocol == spec.protocol()
    assert report.best is not None and report.best.trial_id == 100
    assert report.n_feasible == 46 and report.top_trial_ids[0] == 100
    assert len(report.axis_plots) == 3 and report.curves is not None
    assert len(report.curves.trials) == 5
    assert {s.metric for s in report.curves.trials[0].series} == {"val_loss", "train_loss"}
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=["warn", "info", "ok"].index)
    assert {f.subject for f in report.findings_of("boundary")} == {"learning_rate", "num_layers"}

    data = report_to_dict(report)
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert [(f["kind"], f["severity"], f["subject"], f["message"]) for f in back["findings"]] == [
        (f.kind, f.severity, f.subject, f.message) for f in report.findings]
    assert back["findings"][0]["trial_ids"] == list(report.findings[0].trial_ids)
    assert len(back["axis_plots"][0]["x"]) == 46
    assert back["best_vs_trials"]["n"][-1] == 92
    assert "finding" not in back["boundaries"][0]


def test_report_of_an_empty_study_says_there_are_no_results() -> None:
    report = analyze_study(make_spec(), trials_frame([]), None)
    assert [f.kind for f in report.findings] == ["no_results"]
    json.dumps(report_to_dict(report), allow_nan=False)


def test_seed_reruns_of_the_best_and_of_the_baseline_are_never_the_studys_best() -> None:
    """A lucky seed of the baseline (or of a rerun) must not become the study's best: the
    next round of reruns would then take the baseline as its candidate."""
    spec = make_spec()
    search = [make_trial(i, {"learning_rate": at(LR, i / 10), "weight_decay": 0.1, "num_layers": 4},
                         0.30 - 0.01 * i) for i in range(1, 9)]
    lucky = [make_trial(20, {"learning_rate": 1e-3, "weight_decay": 0.0, "num_layers": 4}, 0.05,
                        kind="baseline", seed=7),
             make_trial(21, dict(search[-1].params), 0.06, kind="rerun", seed=7)]
    report = analyze_study(spec, trials_frame(search + lucky))
    assert report.best is not None and report.best.trial_id == 8
    assert report.top_trial_ids[0] == 8 and not {20, 21} & set(report.top_trial_ids)
    assert report.n_feasible == 8


def test_the_infeasible_fraction_is_of_the_search_not_of_its_reruns() -> None:
    spec = make_spec()
    search = [make_trial(i, {"learning_rate": at(LR, i / 10), "weight_decay": 0.1, "num_layers": 4},
                         None if i < 3 else 0.3, state="DIVERGED" if i < 3 else "COMPLETED")
              for i in range(1, 11)]
    reruns = [make_trial(20 + s, dict(search[-1].params), 0.3, kind=kind, seed=s)
              for s in range(5) for kind in ("rerun", "baseline")]
    summary = infeasible_summary(trials_frame(search + reruns), spec)
    assert summary is not None and summary.fraction == pytest.approx(0.2)  # 2 of 10, not 2 of 20


def test_axis_plots_show_the_search_and_the_text_report_survives_a_baseline_outside_it() -> None:
    """A baseline rerun with weight_decay = 0 sits outside a log range: it is no point of
    the search's axis plot (plotext cannot place 0 on a log axis: the report crashed)."""
    from types import SimpleNamespace

    from tuneplay_tui.report_cli import build_sections, render_text

    wd = RangeParam("weight_decay", 1e-6, 1e-2, "log")
    spec = make_spec(nuisance=(LR, wd))
    search = [make_trial(i, {"learning_rate": at(LR, i / 10), "weight_decay": at(wd, i / 10)}, 0.3 - 0.01 * i)
              for i in range(1, 9)]
    reruns = [make_trial(20 + s, {"learning_rate": 1e-3, "weight_decay": 0.0}, 0.2, kind="baseline", seed=s)
              for s in range(3)]
    reruns += [make_trial(30 + s, dict(search[-1].params), 0.22, kind="rerun", seed=s) for s in range(3)]
    report = analyze_study(spec, trials_frame(search + reruns))
    plot = next(p for p in report.axis_plots if p.name == "weight_decay")
    assert set(plot.trial_ids) == set(range(1, 9)) and 0.0 not in plot.x
    assert report.n_trials == 14 and report.n_reruns == 6
    text = render_text(build_sections(SimpleNamespace(report=report, scaling=None), 100, False))
    assert "8 trials + 6 reruns (14 completed)" in text and "Axis plot: weight_decay" in text
