"""Sampling density: is the region of good results covered by enough trials to trust?

Playbook, "Checking sampling density": a study's conclusions rest on how well the good part
of the search space was sampled. The "good region" here is the set of feasible search trials
whose result lies within a quarter of the way from the best result to the median result
(an adaptive tolerance: sharp optima give few good trials, flat ones many). Fewer than
:data:`MIN_GOOD` such trials is a ``sparse_sampling`` warning. Per dimension the report gives
the interval the good trials span, how much of the range that is (on its scale) and how many
trials of any result landed inside it; and, for a nuisance range holding at least 3 good
trials in a compact part of it, the narrower range around them
(:func:`engine.analysis.boundary.narrow_range`: padded, never a single point), which the
sparse-sampling advice and the next-round plan both quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.boundary import narrow_range
from engine.analysis.findings import DENSE_SAMPLING, SPARSE_SAMPLING, Finding, num
from engine.analysis.frames import direction, hp_column, ranked_results, unit_positions
from engine.kinds import Mode
from engine.space import ChoiceParam, Param, RangeParam, format_value
from engine.spec import StudySpec

GOOD_FRACTION = 0.25  # good: within this share of the way from the best result to the median
MIN_GOOD = 5  # fewer good trials than this: too few to trust the good region
MIN_NARROW_GOOD = 3  # fewer good trials than this: no region to narrow a range around


@dataclass(frozen=True)
class DimensionDensity:
    """How the good trials spread along one hyperparameter.

    Attributes:
        name, scale: the hyperparameter.
        good_low, good_high: the interval the good trials span (None for a categorical).
        good_values: the categorical values the good trials use (empty for a range).
        good_span: the share of the range (on its scale) or of the choices they cover.
        n_in_region: feasible trials of any result whose value lies in that interval/set.
        narrowed_low, narrowed_high: a narrower range around the good trials, for a nuisance
            range where narrowing removes at least 40% of it (else None).
    """

    name: str
    scale: str
    good_low: float | None
    good_high: float | None
    good_values: tuple[Any, ...]
    good_span: float
    n_in_region: int
    narrowed_low: float | None = None
    narrowed_high: float | None = None


@dataclass(frozen=True)
class SamplingDensity:
    """The good region of a study and how densely it was sampled.

    Attributes:
        threshold: results at least this good count as good (in the metric's units).
        best_value, median_value: of the feasible search trials.
        n_feasible, n_good: counts; ``good_trial_ids`` the good trials, best first.
        dimensions: per searched hyperparameter, see :class:`DimensionDensity`.
        finding: ``sparse_sampling`` (warn) or ``dense_sampling`` (ok).
    """

    threshold: float
    best_value: float
    median_value: float
    n_feasible: int
    n_good: int
    good_trial_ids: tuple[int, ...]
    dimensions: tuple[DimensionDensity, ...]
    finding: Finding


def sampling_density(trials: pd.DataFrame, spec: StudySpec) -> SamplingDensity | None:
    """The good region and its coverage, or None with fewer than 3 feasible search trials."""
    ranked = ranked_results(trials, spec.mode)
    if len(ranked) < 3:
        return None
    score = ranked["score"].to_numpy()
    best, median = float(score[0]), float(np.median(score))
    cutoff = best + GOOD_FRACTION * (median - best)
    good = ranked[score <= cutoff]
    dims = tuple(_dimension(p, ranked, good, spec.role_of(p.name) == "nuisance")
                 for p in spec.searched if hp_column(p.name) in ranked)
    sign = direction(spec.mode)
    threshold = sign * cutoff
    ids = tuple(good["trial_id"].tolist())
    finding = _finding(spec, len(ranked), ids, threshold, sign * best, sign * median, dims)
    return SamplingDensity(
        threshold=threshold, best_value=sign * best, median_value=sign * median,
        n_feasible=len(ranked), n_good=len(ids), good_trial_ids=ids, dimensions=dims,
        finding=finding,
    )


def _dimension(param: Param, ranked: pd.DataFrame, good: pd.DataFrame,
               nuisance: bool) -> DimensionDensity:
    col = hp_column(param.name)
    if isinstance(param, ChoiceParam):
        values = tuple(v for v in param.values if v in set(good[col].dropna().tolist()))
        inside = int(ranked[col].isin(values).sum())
        span = len(values) / max(len(param.values), 1)
        return DimensionDensity(param.name, "categorical", None, None, values, span, inside)
    x = pd.to_numeric(good[col], errors="coerce").to_numpy(float)
    x = x[np.isfinite(x)]
    if not x.size:
        return DimensionDensity(param.name, param.scale, None, None, (), 0.0, 0)
    lo, hi = float(x.min()), float(x.max())
    u = unit_positions(param, np.array([lo, hi]))
    all_x = pd.to_numeric(ranked[col], errors="coerce").to_numpy(float)
    inside = int(np.sum((all_x >= lo) & (all_x <= hi)))
    can_narrow = nuisance and isinstance(param, RangeParam) and x.size >= MIN_NARROW_GOOD
    narrowed = narrow_range(param, lo, hi) if can_narrow else None
    return DimensionDensity(param.name, param.scale, lo, hi, (), float(u[1] - u[0]), inside,
                            *(narrowed or (None, None)))


def _finding(
    spec: StudySpec, n_feasible: int, ids: tuple[int, ...], threshold: float, best: float,
    median: float, dims: tuple[DimensionDensity, ...],
) -> Finding:
    op = "<=" if spec.mode == Mode.MIN else ">="
    region = f"{spec.metric} {op} {format_value(threshold)}"
    evidence = {
        "n_feasible": n_feasible, "n_good": len(ids), "min_good": MIN_GOOD,
        "threshold": num(threshold), "best_value": num(best), "median_value": num(median),
        "dimensions": {d.name: {
            "good_low": num(d.good_low) if d.good_low is not None else None,
            "good_high": num(d.good_high) if d.good_high is not None else None,
            "good_values": list(d.good_values), "good_span": num(d.good_span, 4),
            "n_in_region": d.n_in_region, "narrowed_low": d.narrowed_low,
            "narrowed_high": d.narrowed_high} for d in dims},
    }
    if len(ids) < MIN_GOOD:
        where = ", ".join(_where(d) for d in dims if d.narrowed_low is not None)
        action = (f"add trials, or narrow the nuisance ranges around it ({where})" if where
                  else "add trials")
        message = (f"Only {len(ids)} of {n_feasible} trials reach the good region ({region}), "
                   f"too few to trust its shape; {action}.")
        return Finding(SPARSE_SAMPLING, "warn", message, "study", ids, evidence)
    message = (f"{len(ids)} of {n_feasible} trials reach the good region ({region}): "
               f"it is sampled densely enough to read the axis plots.")
    return Finding(DENSE_SAMPLING, "ok", message, "study", ids, evidence)


def _where(d: DimensionDensity) -> str:
    return f"{d.name} [{format_value(d.narrowed_low)}, {format_value(d.narrowed_high)}]"
