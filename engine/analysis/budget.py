"""Best result versus number of trials: how much does the study's outcome depend on budget?

For each budget ``n`` the curve gives the median and the 10%/90% quantiles of the best value
among ``n`` trials drawn with replacement from the study's feasible search results (a
bootstrap). The quantiles are computed exactly rather than by Monte Carlo: with sorted
results ``s_1 <= ... <= s_N`` (lower is better), the best of ``n`` draws is at most ``s_i``
with probability ``1 - (1 - i/N)^n``, so the ``q`` quantile is ``s_i`` with
``i = ceil(N * (1 - (1 - q)^(1/n)))``. This is the limit of the (B, n) index-matrix bootstrap
(:func:`sample_best_of_n`, used by the tests to check it), costs O(N log N) instead of
O(B * n) per budget, has no sampling noise and is monotone in ``n`` by construction.
Note the bootstrap cannot predict results better than the best one observed, so the
doubled budget is an optimistic floor, and the halved budget is the informative side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.analysis.findings import BUDGET_SENSITIVITY, Finding, num
from engine.analysis.frames import direction, ranked_results
from engine.space import format_value
from engine.spec import StudySpec

QUANTILES = (0.1, 0.5, 0.9)
FULL_GRID_UP_TO = 250  # every n in 1..2N up to this N; a geometric grid of n beyond it
GRID_POINTS = 120
SATURATED = 0.05  # halving costs < 5% of (median result - best): the search has saturated


@dataclass(frozen=True)
class BestVsTrials:
    """The bootstrapped best-vs-number-of-trials curve (metric units; ``n`` ascending).

    ``q10``/``q90`` bound the 10-90% band numerically (q10 <= q90 whatever the mode);
    ``n_observed`` is the study's feasible search trial count, ``observed_best`` its best.
    """

    metric: str
    mode: str
    n: tuple[int, ...]
    median: tuple[float, ...]
    q10: tuple[float, ...]
    q90: tuple[float, ...]
    n_observed: int
    observed_best: float
    finding: Finding


def best_of_n_quantiles(scores: np.ndarray, ns: np.ndarray, q: float) -> np.ndarray:
    """Exact bootstrap ``q`` quantile of min(n draws) from ``scores`` (lower is better).

    Args:
        scores: results, oriented so lower is better (any order).
        ns: budgets (>= 1).
        q: the quantile in (0, 1).
    """
    s = np.sort(np.asarray(scores, dtype=float))
    big_n = len(s)
    ns = np.asarray(ns, dtype=float)
    i = np.ceil(big_n * (1.0 - (1.0 - q) ** (1.0 / ns)) - 1e-9).astype(int)
    return s[np.clip(i, 1, big_n) - 1]


def sample_best_of_n(
    scores: np.ndarray, n: int, n_boot: int = 2000, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Monte Carlo bootstrap: the best (min) of ``n`` draws, ``n_boot`` times.

    Draws a (n_boot, n) index matrix at once; the exact quantiles above are its limit.
    """
    rng = rng or np.random.default_rng(0)
    s = np.asarray(scores, dtype=float)
    idx = rng.integers(0, len(s), size=(n_boot, n))
    return s[idx].min(axis=1)


def budget_grid(n_observed: int) -> np.ndarray:
    """Budgets 1..2N (every one for small N; a geometric grid incl. N/2, N and 2N otherwise)."""
    top = 2 * n_observed
    if n_observed <= FULL_GRID_UP_TO:
        return np.arange(1, top + 1)
    grid = np.round(np.geomspace(1, top, GRID_POINTS)).astype(int)
    return np.unique(np.concatenate([grid, [max(1, n_observed // 2), n_observed, top]]))


def best_vs_trials(trials: pd.DataFrame, spec: StudySpec) -> BestVsTrials | None:
    """The best-vs-number-of-trials curve of a study (None with fewer than 2 results)."""
    ranked = ranked_results(trials, spec.mode)
    if len(ranked) < 2:
        return None
    scores = ranked["score"].to_numpy()
    big_n = len(scores)
    ns = budget_grid(big_n)
    sign = direction(spec.mode)
    lo, mid, hi = (sign * best_of_n_quantiles(scores, ns, q) for q in QUANTILES)
    q10, q90 = np.minimum(lo, hi), np.maximum(lo, hi)
    finding = _finding(spec, scores, ranked["trial_id"].to_numpy())
    return BestVsTrials(
        metric=spec.metric, mode=spec.mode, n=tuple(ns.tolist()), median=tuple(mid.tolist()),
        q10=tuple(q10.tolist()), q90=tuple(q90.tolist()), n_observed=big_n,
        observed_best=float(sign * scores[0]), finding=finding,
    )


def _finding(spec: StudySpec, scores: np.ndarray, ids: np.ndarray) -> Finding:
    big_n = len(scores)
    half, double = max(1, big_n // 2), 2 * big_n
    med = best_of_n_quantiles(scores, np.array([half, big_n, double]), 0.5)
    sign = direction(spec.mode)
    cost_half, gain_double = float(med[0] - med[1]), float(med[1] - med[2])
    spread = float(np.median(scores) - scores[0]) or 1e-12
    saturated = cost_half <= SATURATED * spread
    verdict = ("the best result has saturated: more trials of this search would barely "
               "improve it" if saturated else "the best still depends on the budget: more "
               "trials (or a narrower search space) would likely still improve it")
    m = [format_value(sign * float(v)) for v in med]
    message = (f"Expected best {spec.metric} with {half} trials {m[0]}, with {big_n} {m[1]}, "
               f"with {double} {m[2]} (bootstrap medians): {verdict}.")
    evidence = {
        "n_observed": big_n, "n_half": half, "n_double": double,
        "median_half": num(sign * med[0]), "median_observed": num(sign * med[1]),
        "median_double": num(sign * med[2]), "change_half": num(cost_half),
        "change_double": num(gain_double), "relative_change_half": num(cost_half / spread, 4),
        "saturated": bool(saturated), "observed_best": num(sign * scores[0]),
        "note": "the bootstrap cannot exceed the best observed result",
    }
    top = tuple(int(t) for t in ids[: min(3, len(ids))])
    return Finding(BUDGET_SENSITIVITY, "info", message, "study", top, evidence)

