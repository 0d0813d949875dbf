"""The inputs of analysis: a study's trials and metric curves as pandas DataFrames.

``trials_frame`` has one row per trial (its state, seed, kind, best checkpoint, and one
``hp.<name>`` column per hyperparameter); ``curves_frame`` is long form
``trial_id, step, metric, value``. Everything else in :mod:`engine.analysis` reads these two
frames, plus the helpers here for the questions every analysis asks: which trials are
feasible results, which are the best (for a ``min`` or ``max`` metric), and where a value sits
in its hyperparameter's range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.kinds import Mode, TrialKind
from engine.space import ChoiceParam, Param, RangeParam
from engine.store.base import MetricRow, Trial

HP_PREFIX = "hp."
TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id", "number", "state", "seed", "kind", "point_index", "best_value", "best_step",
    "steps_done", "max_train_steps", "wall_time", "error",
)
CURVE_COLUMNS: tuple[str, ...] = ("trial_id", "step", "metric", "value")
INFEASIBLE_STATES: tuple[str, ...] = ("DIVERGED", "FAILED")
# Cancelled trials were stopped by a person, not by the point: they say nothing about feasibility.
JUDGED_STATES: tuple[str, ...] = ("COMPLETED", "DIVERGED", "FAILED")
RERUN_KIND = TrialKind.RERUN
SEARCH_KIND = "search"


def hp_column(name: str) -> str:
    """The trials-frame column holding hyperparameter ``name``."""
    return HP_PREFIX + name


def trials_frame(trials: Sequence[Trial]) -> pd.DataFrame:
    """One row per trial: :data:`TRIAL_COLUMNS` plus ``hp.<name>`` per hyperparameter.

    ``best_value``/``best_step`` are NaN where the trial has none yet; ``state`` is the
    state's string value (``"COMPLETED"``, ``"DIVERGED"``, ...).
    """
    def opt(v: Any) -> float:
        return math.nan if v is None else float(v)

    cols: dict[str, Any] = {
        "trial_id": np.array([t.id for t in trials], dtype=np.int64),
        "number": np.array([t.number for t in trials], dtype=np.int64),
        "state": [getattr(t.state, "value", str(t.state)) for t in trials],
        "seed": np.array([t.seed for t in trials], dtype=np.int64),
        "kind": [t.kind for t in trials],
        "point_index": np.array([t.point_index for t in trials], dtype=np.int64),
        "best_value": np.array([opt(t.best_value) for t in trials], dtype=np.float64),
        "best_step": np.array([opt(t.best_step) for t in trials], dtype=np.float64),
        "steps_done": np.array([t.steps_done for t in trials], dtype=np.int64),
        "max_train_steps": np.array([t.max_train_steps for t in trials], dtype=np.int64),
        "wall_time": np.array([t.wall_time for t in trials], dtype=np.float64),
        "error": [t.error for t in trials],
    }
    frame = pd.DataFrame(cols, columns=list(TRIAL_COLUMNS))
    params = pd.DataFrame.from_records([dict(t.params) for t in trials], index=frame.index)
    if params.shape[1]:
        params.columns = [hp_column(str(c)) for c in params.columns]
        frame = pd.concat([frame, params], axis=1)
    return frame


def curves_frame(rows: Sequence[MetricRow] | Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Long-form curves ``trial_id, step, metric, value`` from metric rows.

    Also accepts a mapping of column lists (``{"trial_id": [...], "step": [...], ...}``),
    which skips building one object per row.
    """
    if isinstance(rows, Mapping):
        return curves_frame_from_columns(
            rows["trial_id"], rows["step"], rows.get("metric", rows.get("name", [])), rows["value"]
        )
    return curves_frame_from_columns(
        [r.trial_id for r in rows], [r.step for r in rows],
        [r.name for r in rows], [r.value for r in rows],
    )


def curves_frame_from_columns(
    trial_id: Sequence[int] | np.ndarray, step: Sequence[int] | np.ndarray,
    metric: Sequence[str] | np.ndarray, value: Sequence[float] | np.ndarray,
) -> pd.DataFrame:
    """The curves frame straight from parallel columns (the fast path for large studies).

    ``metric`` becomes a categorical column: a study has a handful of metric names repeated
    millions of times, and comparing codes is far cheaper than comparing strings.
    """
    return pd.DataFrame({
        "trial_id": np.asarray(trial_id, dtype=np.int64),
        "step": np.asarray(step, dtype=np.int64),
        "metric": pd.Categorical(metric),
        "value": np.asarray(value, dtype=np.float64),
    })


def direction(mode: str) -> float:
    """+1 for a metric to minimise, -1 for one to maximise (so ``direction * value`` is a loss)."""
    return Mode(mode).sign


def feasible_mask(trials: pd.DataFrame) -> pd.Series:
    """Completed trials with a finite best value: the results every analysis ranks."""
    return (trials["state"] == "COMPLETED") & np.isfinite(trials["best_value"].to_numpy(float))


def infeasible_mask(trials: pd.DataFrame) -> pd.Series:
    """Diverged or failed trials: data about where training breaks."""
    return trials["state"].isin(INFEASIBLE_STATES)


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that sample the search space (seed reruns and baseline reruns are left out)."""
    return trials[trials["kind"] == SEARCH_KIND]


def seed_noise(trials: pd.DataFrame) -> float | None:
    """The trial-to-trial spread from seeds alone: the pooled standard deviation of the
    feasible seed reruns (and baseline reruns) that share one configuration, or None when no
    configuration was rerun at least twice."""
    reruns = trials[(trials["kind"] != SEARCH_KIND) & feasible_mask(trials)]
    hp_cols = [c for c in trials.columns if c.startswith(HP_PREFIX)]
    if len(reruns) < 2 or not hp_cols:
        return None
    groups = pd.util.hash_pandas_object(reruns[hp_cols], index=False).to_numpy()
    stats = reruns["best_value"].groupby(groups).agg(["var", "count"])
    stats = stats[stats["count"] >= 2]
    dof = float((stats["count"] - 1).sum())
    if not dof:
        return None
    return math.sqrt(float(((stats["count"] - 1) * stats["var"]).sum()) / dof)


def top_k_count(n_feasible: int) -> int:
    """How many trials count as "the best": max(3, ceil(10% of feasible)), at most all."""
    return min(n_feasible, max(3, math.ceil(0.1 * n_feasible)))


def ranked_results(trials: pd.DataFrame, mode: str, *, search_only: bool = True) -> pd.DataFrame:
    """Feasible trials sorted best first, with a ``score`` column (lower is better); with
    ``search_only`` (the default), the search's own trials: seed reruns of its best points and
    of the baseline are not candidates (a lucky baseline seed would otherwise rank first)."""
    mask = feasible_mask(trials).to_numpy().copy()
    if search_only:
        mask &= (trials["kind"] == SEARCH_KIND).to_numpy()
    rows = np.flatnonzero(mask)
    score = direction(mode) * trials["best_value"].to_numpy(float)[rows]
    order = np.lexsort((trials["trial_id"].to_numpy()[rows], score))  # ties: lower id first
    return trials.iloc[rows[order]].assign(score=score[order])


def unit_positions(param: Param, values: Any) -> np.ndarray:
    """Vectorised :meth:`Param.to_unit`: where each value sits in the range (0 low, 1 high).

    Missing values (and categorical values outside the choice list) are NaN.
    """
    if isinstance(param, ChoiceParam):
        lookup = {v: (i + 0.5) / len(param.values) for i, v in enumerate(param.values)}
        return pd.Series(values).map(lookup).to_numpy(dtype=float, na_value=np.nan)
    assert isinstance(param, RangeParam)
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    if param.is_log:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (np.log(v) - math.log(param.low)) / (math.log(param.high) - math.log(param.low))
        return np.where(v <= 0, 0.0, u)
    return (v - param.low) / (param.high - param.low)


def param_scale(param: Param) -> str:
    """The scale name, ``"categorical"`` for a choice."""
    return "categorical" if isinstance(param, ChoiceParam) else param.scale
