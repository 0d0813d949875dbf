"""Isolation plots: the best result per scientific value, optimised over the nuisance ones.

Playbook, "Isolation plots": to compare values of a scientific hyperparameter fairly, take
for each value the best trial over the nuisance hyperparameters. A range-valued scientific
hyperparameter with many distinct values is cut into quantile buckets. Where the best
trial's configuration was rerun with new seeds (trials of kind ``"rerun"`` with the same
hyperparameters), the row also carries the reruns' mean and spread, the trial variance the
comparison must beat. The best trial itself is left out of that mean: it was selected for
being best, so its value is biased (the winner's curse). Only the search's own trials are
counted per value (``n_trials``/``n_feasible``/``n_infeasible``); reruns are counted apart
(``n_reruns``), never as more trials of a value.

A tie is not a win: when the best values of two or more rows are equal, the plot has no
``best_row`` (``tied`` lists them) and the finding says they tie.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.findings import ISOLATION, Finding, num, opt_float
from engine.analysis.frames import (
    HP_PREFIX,
    RERUN_KIND,
    feasible_mask,
    hp_column,
    infeasible_mask,
    ranked_results,
    search_trials,
)
from engine.kinds import Mode
from engine.space import ChoiceParam, Param, format_value
from engine.spec import StudySpec

MAX_DISCRETE = 8  # a range scientific axis with more distinct values than this is bucketed
N_BUCKETS = 5  # quantile buckets for a continuous scientific axis


@dataclass(frozen=True)
class IsolationRow:
    """One scientific value (or bucket) of an isolation plot.

    ``value`` is the value itself, or a label ``"[lo, hi]"`` for a bucket (then
    ``bucket_low``/``bucket_high`` hold its bounds). ``best_value``/``best_trial_id`` are the
    best feasible search trial's; ``rerun_*`` summarise seed reruns of that trial's config.
    """

    value: Any
    bucket_low: float | None
    bucket_high: float | None
    best_value: float | None
    best_trial_id: int | None
    n_trials: int
    n_feasible: int
    n_infeasible: int
    rerun_mean: float | None
    rerun_std: float | None
    n_reruns: int


@dataclass(frozen=True)
class IsolationPlot:
    """Best-over-nuisance per value of one scientific hyperparameter (rows in axis order).

    ``best_row`` indexes the row with the best value, None when none finished or when rows
    tie for best; ``tied`` then lists the tied rows.
    """

    name: str
    scale: str
    bucketed: bool
    metric: str
    mode: str
    rows: tuple[IsolationRow, ...]
    best_row: int | None
    finding: Finding | None
    tied: tuple[int, ...] = ()


def isolation_plots(trials: pd.DataFrame, spec: StudySpec) -> tuple[IsolationPlot, ...]:
    """One isolation plot per scientific hyperparameter present in the trials."""
    return tuple(isolation_plot(trials, spec, p) for p in spec.scientific
                 if hp_column(p.name) in trials)


def isolation_plot(trials: pd.DataFrame, spec: StudySpec, param: Param) -> IsolationPlot:
    """The isolation plot of scientific hyperparameter ``param``."""
    col = hp_column(param.name)
    search = search_trials(trials)
    keys, bounds, bucketed = _keys(search[col], param)
    frame = search.assign(_key=keys)
    ranked = ranked_results(frame, spec.mode)
    best = ranked.groupby("_key", sort=False, observed=True).head(1).set_index("_key")
    n_all = frame.groupby("_key", observed=True)["trial_id"].size()
    n_ok = frame[feasible_mask(frame)].groupby("_key", observed=True)["trial_id"].size()
    n_bad = frame[infeasible_mask(frame)].groupby("_key", observed=True)["trial_id"].size()
    reruns = _rerun_stats(trials, best)
    order = [k for k in bounds if k in n_all.index]
    rows = tuple(_row(k, bounds[k], best, n_all, n_ok, n_bad, reruns) for k in order)
    sign = Mode(spec.mode).sign
    valid = {i: sign * r.best_value for i, r in enumerate(rows) if r.best_value is not None}
    top = min(valid.values()) if valid else None
    tied = tuple(i for i, v in valid.items() if top is not None and _same(v, top))
    best_row = tied[0] if len(tied) == 1 else None
    scale = "categorical" if isinstance(param, ChoiceParam) else param.scale
    plot = IsolationPlot(param.name, scale, bucketed, spec.metric, spec.mode, rows, best_row, None,
                         tied if len(tied) > 1 else ())
    return dataclasses.replace(plot, finding=_finding(plot, sign))


def _same(a: float, b: float) -> bool:
    """Equal results (a metric read off one validation set repeats exact values)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _keys(values: pd.Series, param: Param) -> tuple[pd.Series, dict[Any, tuple], bool]:
    """Group keys per trial and, per key in axis order, its (low, high) bounds."""
    if isinstance(param, ChoiceParam):
        present = set(values.dropna().tolist())
        extra = sorted((v for v in present if v not in param.values), key=str)
        return values, {v: (None, None) for v in (*param.values, *extra)}, False
    x = pd.to_numeric(values, errors="coerce")
    distinct = np.unique(x.dropna().to_numpy())
    if len(distinct) <= MAX_DISCRETE:
        return x, {v.item(): (None, None) for v in distinct}, False
    codes, bins = pd.qcut(x, q=N_BUCKETS, labels=False, retbins=True, duplicates="drop")
    pairs = list(itertools.pairwise(bins.tolist()))
    labels = [f"[{format_value(lo)}, {format_value(hi)}]" for lo, hi in pairs]
    keys = codes.map(dict(enumerate(labels))).astype(object)
    edges = dict(zip(labels, pairs, strict=True))
    return keys, edges, True


def _rerun_stats(frame: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Mean/std/count of feasible reruns sharing each group-best trial's hyperparameters."""
    hp_cols = [c for c in frame.columns if c.startswith(HP_PREFIX)]
    reruns = frame[(frame["kind"] == RERUN_KIND) & feasible_mask(frame)]
    if reruns.empty or best.empty or not hp_cols:
        return pd.DataFrame(columns=["mean", "std", "count"])
    best_hash = pd.util.hash_pandas_object(best[hp_cols], index=False).to_numpy()
    rerun_hash = pd.util.hash_pandas_object(reruns[hp_cols], index=False).to_numpy()
    stats = reruns["best_value"].groupby(rerun_hash).agg(["mean", "std", "count"])
    return stats.reindex(best_hash).set_axis(best.index)


def _row(key: Any, bounds: tuple, best: pd.DataFrame, n_all: pd.Series, n_ok: pd.Series,
         n_bad: pd.Series, reruns: pd.DataFrame) -> IsolationRow:
    has_best = key in best.index
    stats = reruns.loc[key] if key in reruns.index else pd.Series({"count": 0.0})
    count = int(stats["count"]) if np.isfinite(stats["count"]) else 0
    return IsolationRow(
        value=key, bucket_low=bounds[0], bucket_high=bounds[1],
        best_value=float(best.at[key, "best_value"]) if has_best else None,
        best_trial_id=int(best.at[key, "trial_id"]) if has_best else None,
        n_trials=int(n_all.get(key, 0)), n_feasible=int(n_ok.get(key, 0)),
        n_infeasible=int(n_bad.get(key, 0)),
        rerun_mean=opt_float(stats["mean"]) if count else None,
        rerun_std=opt_float(stats["std"]) if count >= 2 else None, n_reruns=count,
    )


def _finding(plot: IsolationPlot, sign: float) -> Finding | None:
    scored = sorted(((sign * r.best_value, r) for r in plot.rows if r.best_value is not None),
                    key=lambda pair: pair[0])
    if not scored:
        return None
    top_score, top = scored[0]
    label = f"{plot.name}={format_value(top.value)}"
    ids = tuple(r.best_trial_id for _, r in scored[:2] if r.best_trial_id is not None)
    evidence: dict[str, Any] = {"best": format_value(top.value), "best_value": num(top.best_value)}
    if len(scored) == 1:
        message = (f"{plot.name}: only {label} has a finished result yet "
                   f"({plot.metric} {format_value(top.best_value)}).")
        return Finding(ISOLATION, "info", message, plot.name, ids, evidence)
    if plot.tied:
        return _tie(plot, [r for _, r in scored[:len(plot.tied)]], evidence)
    second_score, second = scored[1]
    gap = second_score - top_score
    spreads = [r.rerun_std for r in (top, second) if r.rerun_std is not None]
    evidence.update(runner_up=format_value(second.value), runner_up_value=num(second.best_value),
                    gap=num(gap), seed_std=num(max(spreads)) if spreads else None)
    head = (f"{plot.name}: {label} gives the best {plot.metric} {format_value(top.best_value)}, "
            f"{format_value(gap)} ahead of {format_value(second.value)}")
    if not spreads:
        tail = "; rerun both with new seeds to measure trial variance before deciding."
    elif gap <= 2 * max(spreads):
        tail = f", within twice the seed spread ({format_value(max(spreads))}): not yet evidence."
    else:
        tail = f", beyond twice the seed spread ({format_value(max(spreads))})."
    return Finding(ISOLATION, "info", head + tail, plot.name, ids, evidence)


def _tie(plot: IsolationPlot, rows: list[IsolationRow], evidence: dict[str, Any]) -> Finding:
    """Two or more values reach the same best result: no winner, and no evidence of one."""
    names = [format_value(r.value) for r in rows]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    spreads = [r.rerun_std for r in rows if r.rerun_std is not None]
    tail = (f" (seed spread {format_value(max(spreads))})." if spreads else
            "; rerun them with new seeds to measure trial variance before deciding.")
    message = (f"{plot.name}: {listed} tie at the best {plot.metric} "
               f"{format_value(rows[0].best_value)} (each over the nuisance hyperparameters): "
               f"no difference between them{tail}")
    ids = tuple(r.best_trial_id for r in rows if r.best_trial_id is not None)
    evidence.update(best=None, tie=True, tied=names, gap=0.0,
                    seed_std=num(max(spreads)) if spreads else None)
    return Finding(ISOLATION, "info", message, plot.name, ids, evidence)
