"""Bayesian optimization with scikit-optimize, rebuilt from stored trials on every call.

The sampler keeps no state between calls: an ``skopt.Optimizer`` is built from the study's
seed, told every finished trial (diverged and failed ones as infeasible, with a penalty
worse than any feasible result, never dropped) and every pending one (as a "constant liar"
so a batch of asks spreads out), then asked for as many points as there are free slots.
Maximization is handled by flipping the sign.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.space import ChoiceParam, Param

N_INITIAL_MAX = 10


def n_initial_points(budget: int) -> int:
    """Quasi-random warm-up points before the surrogate model is trusted."""
    return int(max(1, min(N_INITIAL_MAX, budget // 3 or 1)))


def _dimensions(params: Sequence[Param]) -> list[Any]:
    from skopt.space import Categorical, Integer, Real

    dims: list[Any] = []
    for p in params:
        if isinstance(p, ChoiceParam):
            dims.append(Categorical(list(p.values), name=p.name, transform="onehot"))
        elif p.is_int:
            prior = "log-uniform" if p.is_log else "uniform"
            dims.append(Integer(int(p.low), int(p.high), prior=prior, name=p.name))
        else:
            prior = "log-uniform" if p.is_log else "uniform"
            dims.append(Real(float(p.low), float(p.high), prior=prior, name=p.name))
    return dims


def make_optimizer(params: Sequence[Param], seed: int, budget: int) -> Any:
    from skopt import Optimizer

    return Optimizer(
        _dimensions(params), base_estimator="GP", acq_func="EI", acq_optimizer="sampling",
        n_initial_points=n_initial_points(budget), initial_point_generator="halton",
        random_state=seed,
    )


def suggest(
    params: Sequence[Param],
    seed: int,
    budget: int,
    mode: str,
    finished: Sequence[tuple[Mapping[str, Any], float | None]],
    pending: Sequence[Mapping[str, Any]],
    n: int,
) -> list[dict[str, Any]]:
    """Ask for ``n`` new points.

    Args:
        params: the searched dimensions.
        seed: the study seed (the optimizer's random state).
        budget: the study budget (sets the number of initial points).
        mode: "min" or "max" for the study metric.
        finished: (params, best value) per finished trial; value None means infeasible.
        pending: params of trials queued or running (their results are not known yet).
        n: how many points to return.
    """
    if n <= 0:
        return []
    opt = make_optimizer(params, seed, budget)
    xs, ys = _observations(params, mode, finished)
    sign_liar = max(ys) if ys else 0.0
    xs += [_x(params, p) for p in pending]
    ys += [sign_liar] * len(pending)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skopt warns about repeated points; harmless here
        if xs:
            opt.tell(xs, ys)
        points = opt.ask(n_points=n, strategy="cl_max") if n > 1 else [opt.ask()]
    return [{p.name: _native(v) for p, v in zip(params, x)} for x in points]


def _observations(
    params: Sequence[Param], mode: str, finished: Sequence[tuple[Mapping[str, Any], float | None]]
) -> tuple[list[list[Any]], list[float]]:
    sign = 1.0 if mode == "min" else -1.0
    feasible = [sign * float(v) for _, v in finished if v is not None and np.isfinite(v)]
    if feasible:
        spread = (max(feasible) - min(feasible)) or abs(max(feasible)) or 1.0
        penalty = max(feasible) + spread
    else:
        penalty = 1.0
    xs, ys = [], []
    for hp, value in finished:
        xs.append(_x(params, hp))
        ys.append(sign * float(value) if value is not None and np.isfinite(value) else penalty)
    return xs, ys


def _x(params: Sequence[Param], hp: Mapping[str, Any]) -> list[Any]:
    out = []
    for p in params:
        v = hp[p.name]
        if not isinstance(p, ChoiceParam):
            v = int(v) if p.is_int else float(min(max(v, p.low), p.high))
        out.append(v)
    return out


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
