"""Axis plots: each trial at its best validation value against one hyperparameter.

The playbook's first look at a study: per hyperparameter, the metric of every trial's best
checkpoint against the value it was given, infeasible (diverged/failed) trials marked at
their x position, the best trials highlighted. The boundary check reads the same picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.frames import (
    feasible_mask,
    hp_column,
    infeasible_mask,
    param_scale,
    ranked_results,
    search_trials,
    top_k_count,
)
from engine.kinds import Mode
from engine.space import ChoiceParam
from engine.spec import StudySpec


@dataclass(frozen=True)
class AxisPlot:
    """The data of one axis plot (draw x against y; infeasible trials at ``infeasible_y``).

    Attributes:
        name: the hyperparameter.
        role: ``"scientific"`` or ``"nuisance"``.
        scale: ``linear | log | int | int_log | categorical``; ``log`` is True for log scales.
        low, high: the searched range (None for a categorical); ``categories`` its choices.
        metric, mode: what y is and which way is better.
        x, y, trial_ids: feasible trials (completed, with a best value), parallel tuples.
        infeasible_x, infeasible_trial_ids: diverged/failed trials' x positions.
        infeasible_y: where to draw infeasible trials (the worst feasible value, a cap), or None.
        top_trial_ids: the best ``top_k`` trials, best first.
    """

    name: str
    role: str
    scale: str
    log: bool
    low: float | None
    high: float | None
    categories: tuple[Any, ...] | None
    metric: str
    mode: str
    x: tuple[Any, ...]
    y: tuple[float, ...]
    trial_ids: tuple[int, ...]
    infeasible_x: tuple[Any, ...]
    infeasible_trial_ids: tuple[int, ...]
    infeasible_y: float | None
    top_trial_ids: tuple[int, ...]


def axis_plot(
    trials: pd.DataFrame, spec: StudySpec, name: str, top_k: int | None = None
) -> AxisPlot:
    """The axis plot of hyperparameter ``name`` (scientific or nuisance) of a study.

    Args:
        trials: the trials frame (see :func:`engine.analysis.frames.trials_frame`).
        spec: the study, for the range, scale, role, metric and mode.
        name: a searched hyperparameter of ``spec``.
        top_k: how many best trials to highlight (default: max(3, 10% of feasible)).
    """
    param = spec.param(name)
    if param is None:
        raise ValueError(f"{name!r} is not a searched hyperparameter of study {spec.name!r}")
    trials = search_trials(trials)  # the search's own points; seed reruns sit outside it
    col = hp_column(name)
    values = trials.get(col, pd.Series([math.nan] * len(trials), index=trials.index))
    feasible = feasible_mask(trials).to_numpy()
    infeasible = infeasible_mask(trials).to_numpy()
    ranked = ranked_results(trials, spec.mode)
    k = top_k_count(len(ranked)) if top_k is None else min(top_k, len(ranked))
    y = trials["best_value"].to_numpy(float)[feasible]
    cap = (float(np.max(y)) if spec.mode == Mode.MIN else float(np.min(y))) if y.size else None
    return AxisPlot(
        name=name, role=spec.role_of(name) or "nuisance", scale=param_scale(param),
        log=bool(getattr(param, "is_log", False)),
        low=getattr(param, "low", None), high=getattr(param, "high", None),
        categories=tuple(param.values) if isinstance(param, ChoiceParam) else None,
        metric=spec.metric, mode=spec.mode,
        x=_values(values[feasible]), y=tuple(y.tolist()),
        trial_ids=tuple(trials["trial_id"].to_numpy()[feasible].tolist()),
        infeasible_x=_values(values[infeasible]),
        infeasible_trial_ids=tuple(trials["trial_id"].to_numpy()[infeasible].tolist()),
        infeasible_y=cap,
        top_trial_ids=tuple(ranked["trial_id"].to_numpy()[:k].tolist()),
    )


def axis_plots(
    trials: pd.DataFrame, spec: StudySpec, top_k: int | None = None
) -> tuple[AxisPlot, ...]:
    """One axis plot per searched hyperparameter (scientific first, then nuisance)."""
    return tuple(axis_plot(trials, spec, p.name, top_k) for p in spec.searched)


def _values(series: pd.Series) -> tuple[Any, ...]:
    """Plain Python values (numpy scalars would not survive JSON)."""
    return tuple(series.tolist())

