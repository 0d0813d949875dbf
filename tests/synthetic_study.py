"""Studies built by hand for the analysis tests: trials and curves with known shapes, no training.

``trial`` makes one stored trial, ``curves`` the long-form curves of a few trials, and
``synthetic`` a whole study for any spec (random points, a bowl-shaped metric, curves that
improve, saturate or turn up), so every shipped study file can be analysed quickly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis import curves_frame, trials_frame
from engine.space import ChoiceParam, RangeParam
from engine.spec import StudySpec
from engine.store.base import Trial, TrialState

METRIC_SHAPES = ("improving", "saturated", "clean", "overfit")


def trial(i: int, params: Mapping[str, Any], value: float | None, *, best_step: int | None = None,
          steps: int = 100, kind: str = "search", seed: int = 0, state: str = "COMPLETED") -> Trial:
    """One finished trial (``best_step`` defaults to the middle of training)."""
    if best_step is None:
        best_step = steps // 2
    return Trial(id=i, study_id=1, number=i, params=dict(params), seed=seed,
                 state=TrialState(state), attempt=1, point_index=i, kind=kind,
                 max_train_steps=steps, created_at=0.0,
                 best_step=best_step if value is not None else None, best_value=value,
                 steps_done=steps)


def shape(kind: str, x: np.ndarray, end: float, rng: np.random.Generator) -> np.ndarray:
    """A validation curve over ``x`` in [0, 1] ending near ``end`` (lower is better)."""
    noise = rng.normal(0, 0.002, len(x))
    if kind == "improving":  # still falling steadily at the end
        return end + 0.6 * (1 - x) + noise
    if kind == "saturated":  # flat from ~15% of training on
        return end + 2.0 * np.exp(-30 * x) + noise
    if kind == "overfit":  # best in the middle, then up again
        return end + 2.0 * np.exp(-12 * x) + 0.3 * np.clip(x - 0.5, 0, None) + noise
    return end + 2.0 * np.exp(-8 * x) + noise  # a clean curve, levelling off late


def curves(shapes: Mapping[int, str], steps: int, ends: Mapping[int, float],
           metric: str = "val_error", seed: int = 0) -> pd.DataFrame:
    """Long-form curves (``metric`` every 5% of training) of the given trials."""
    rng = np.random.default_rng(seed)
    at = np.linspace(0, steps - 1, 21).round().astype(int)
    cols: dict[str, list[Any]] = {"trial_id": [], "step": [], "metric": [], "value": []}
    for tid, kind in shapes.items():
        y = shape(kind, at / (steps - 1), ends[tid], rng)
        cols["trial_id"] += [tid] * len(at)
        cols["step"] += at.tolist()
        cols["metric"] += [metric] * len(at)
        cols["value"] += y.tolist()
    return curves_frame(cols)


def synthetic(spec: StudySpec, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished study of ``spec``'s budget: random points, a bowl-shaped metric around a
    random centre (sometimes past an edge), a few diverged trials and seed reruns of the best,
    and curves of random shapes whose best steps follow them."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.2, 1.2, len(spec.searched))
    weight = rng.choice([0.0, 0.2, 1.0], len(spec.searched))  # some ranges barely matter
    steps = spec.max_train_steps
    trials, shapes, ends = [], {}, {}
    for i in range(spec.budget):
        u = rng.uniform(0, 1, len(spec.searched))
        params = {p.name: p.from_unit(x) for p, x in zip(spec.searched, u)}
        params.update(spec.fixed)
        loss = 0.05 + float(np.sum(weight * (u - centre) ** 2)) + rng.normal(0, 0.005)
        if rng.uniform() < 0.08:
            trials.append(trial(i, params, None, steps=steps, state="DIVERGED"))
            continue
        kind = str(rng.choice(METRIC_SHAPES))
        best = {"improving": 0.97, "saturated": rng.uniform(0.2, 1.0), "clean": 0.9,
                "overfit": 0.45}[kind]
        trials.append(trial(i, params, abs(loss), best_step=int(best * (steps - 1)), steps=steps))
        shapes[i], ends[i] = kind, abs(loss)
    best_trial = min((t for t in trials if t.best_value is not None), key=lambda t: t.best_value or 0)
    for s in range(3):  # seed reruns of the best configuration
        value = (best_trial.best_value or 0) + abs(rng.normal(0, 0.01))
        trials.append(trial(1000 + s, best_trial.params, value, steps=steps, kind="rerun", seed=s + 1))
    return trials_frame(trials), curves(shapes, steps, ends, spec.metric, seed)


def grid_params(spec: StudySpec, units: Mapping[str, float]) -> dict[str, Any]:
    """A configuration at the given unit positions (the middle for any name not given)."""
    out: dict[str, Any] = {}
    for p in spec.searched:
        u = units.get(p.name, 0.5)
        out[p.name] = p.values[int(u * (len(p.values) - 1))] if isinstance(p, ChoiceParam) else p.from_unit(u)
    return out


def at(param: RangeParam, u: float) -> float:
    """The value at unit position ``u`` of a continuous range."""
    return float(param.from_unit(u))
