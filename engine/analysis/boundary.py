"""The boundary check: do the best trials sit at the edge of a searched range?

Playbook, "Identifying bad search space boundaries": if the best trials land near the edge
of a range, the optimum may lie outside it, and the range should be expanded.

Rule (documented, tested): the "best trials" are the top ``k`` feasible search trials,
``k = max(3, ceil(10% of feasible))``. An edge is flagged (``warn``) when at least half of
the top ``k`` sit in the outer 10% of the range at that edge, measured on the range's scale
(:meth:`RangeParam.to_unit`). If only the single best trial sits there, that is an ``info``
finding (one trial is weak evidence). Otherwise the range gets a quiet ``well_inside`` ok.
The proposed range extends the flagged edge by half the range's width on its scale (log:
multiply/divide by sqrt(high/low)); ints stay ints, log ranges stay positive, linear ranges
that start at >= 0 stay >= 0, and linear ranges inside [0, 1] (dropout, momentum) stay there.

Insensitivity (``insensitive``, info): a range with no visible effect is not "well inside",
it is insensitive over what was searched. Rule: split the range into thirds on its scale and
take the best result in each (the best over every other hyperparameter, as an isolation plot
does); the range is insensitive when those three bests differ by no more than the metric's
noise, ``max(2 x seed noise, spread of the top k results)`` -- the seed noise being the pooled
standard deviation of seed reruns of one configuration (when the study has them), the top-k
spread how far apart the study's best trials are among themselves. So no part of the range
does worse than the best trials differ from each other, or than a reseed would. It needs at
least 6 feasible search trials and a result in every third; a flagged edge outranks it (a
pile-up at an edge is an effect).

Narrowing (:func:`narrow_range`, used by the sampling-density check and the next-round plan):
the interval the good trials span, padded by 15% of the range's width on each side (on its
scale) so that good trials at a single value still give a range and never a point, rounded
outward to two significant digits and kept inside the current range; only proposed when it
removes at least 40% of the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.findings import BOUNDARY, INSENSITIVE, WELL_INSIDE, Finding, num
from engine.analysis.frames import (
    direction,
    hp_column,
    ranked_results,
    seed_noise,
    top_k_count,
    unit_positions,
)
from engine.space import RangeParam, format_value
from engine.spec import StudySpec

EDGE_BAND = 0.10  # the outer part of the range, on its scale
EDGE_SHARE = 0.5  # the share of the top k in the band that flags an edge
EXPAND_BY = 0.5  # extend a flagged edge by this fraction of the range's width
PARTS = 3  # the insensitivity check compares the best result in each third of the range
MIN_RESULTS_FOR_SENSITIVITY = 6
NOISE_SEEDS = 2.0  # differences within twice the seed noise are noise
NARROW_PAD = 0.15  # a narrowed range pads the good interval by this share on each side
NARROW_MAX_WIDTH = 0.6  # narrowing must remove at least 40% of the range (on its scale)


@dataclass(frozen=True)
class Sensitivity:
    """How much the metric moves across one range: the best result in each third of it.

    Attributes:
        part_best: the best value (metric units) in each third, low to high.
        effect: how far apart those bests are.
        seed_std: the pooled seed-rerun standard deviation (None without reruns).
        top_spread: how far apart the top k results are.
        tolerance: ``max(2 x seed_std, top_spread)``; ``insensitive`` is effect <= tolerance.
    """

    part_best: tuple[float, ...]
    effect: float
    seed_std: float | None
    top_spread: float
    tolerance: float
    insensitive: bool


@dataclass(frozen=True)
class BoundaryCheck:
    """Where the best trials of one range hyperparameter sit, and what to do about it.

    Attributes:
        name, role, scale, low, high: the range as searched.
        top_trial_ids: the best trials (top k), best first; ``top_positions`` their positions
            in the range on its scale (0 = low, 1 = high), ``best_position`` the best one's.
        n_near_low, n_near_high: how many of them sit in the outer 10% at each edge.
        edges: the flagged edges, ``("upper",)``, ``("lower",)``, both or none.
        proposed_low, proposed_high: the suggested next range (the current one if no edge).
        sensitivity: the best result per third of the range (None with too few results).
        finding: the boundary, insensitive or well_inside finding.
    """

    name: str
    role: str
    scale: str
    low: float
    high: float
    top_trial_ids: tuple[int, ...]
    top_positions: tuple[float, ...]
    best_position: float
    n_near_low: int
    n_near_high: int
    edges: tuple[str, ...]
    proposed_low: float
    proposed_high: float
    sensitivity: Sensitivity | None
    finding: Finding

    @property
    def insensitive(self) -> bool:
        """Whether the metric shows no visible effect of this range (see the module doc)."""
        return self.finding.kind == INSENSITIVE


def check_boundaries(
    trials: pd.DataFrame, spec: StudySpec, top_k: int | None = None
) -> tuple[BoundaryCheck, ...]:
    """Boundary checks for every range hyperparameter (scientific and nuisance) of a study.

    Categorical hyperparameters have no edges and are skipped; so is a study with fewer
    than 3 feasible search trials (nothing to call "the best" yet).
    """
    ranked = ranked_results(trials, spec.mode)
    if len(ranked) < 3:
        return ()
    k = top_k_count(len(ranked)) if top_k is None else max(1, min(top_k, len(ranked)))
    noise = seed_noise(trials)
    checks = []
    for param in spec.searched:
        col = hp_column(param.name)
        if isinstance(param, RangeParam) and col in ranked:
            role = spec.role_of(param.name) or "nuisance"
            sens = sensitivity(param, ranked, k, noise, spec.mode)
            checks.append(_check(param, role, ranked.iloc[:k], col, spec.metric, sens))
    return tuple(checks)


def sensitivity(
    param: RangeParam, ranked: pd.DataFrame, k: int, seed_std: float | None, mode: str
) -> Sensitivity | None:
    """The best result in each third of ``param``'s range against the noise (module doc).

    Args:
        ranked: :func:`ranked_results` (feasible search trials, best first, with ``score``).
        k: how many trials count as the best.
        seed_std: :func:`seed_noise` of the study (None without reruns).
    """
    u = unit_positions(param, ranked[hp_column(param.name)].to_numpy())
    keep = np.isfinite(u)
    if int(keep.sum()) < MIN_RESULTS_FOR_SENSITIVITY:
        return None
    part = np.minimum((np.clip(u[keep], 0.0, 1.0) * PARTS).astype(int), PARTS - 1)
    score = ranked["score"].to_numpy()[keep]
    if len(np.unique(part)) < PARTS:
        return None
    best = np.array([score[part == i].min() for i in range(PARTS)])
    effect = float(best.max() - best.min())
    top = np.sort(score)[:k]
    top_spread = float(top[-1] - top[0])
    tolerance = max(NOISE_SEEDS * (seed_std or 0.0), top_spread)
    sign = direction(mode)
    return Sensitivity(tuple(float(sign * b) for b in best), effect, seed_std, top_spread,
                       tolerance, effect <= tolerance)


def _check(param: RangeParam, role: str, top: pd.DataFrame, col: str, metric: str,
           sens: Sensitivity | None) -> BoundaryCheck:
    u = unit_positions(param, top[col].to_numpy())
    ids = top["trial_id"].to_numpy()
    keep = np.isfinite(u)
    u, ids = u[keep], ids[keep]
    k = len(u)
    n_low = int(np.sum(u <= EDGE_BAND))
    n_high = int(np.sum(u >= 1.0 - EDGE_BAND))
    need = math.ceil(EDGE_SHARE * k)
    edges = tuple(e for e, n in (("lower", n_low), ("upper", n_high)) if k and n >= need)
    new_low, new_high = expand_range(param, edges)
    best = float(u[0]) if k else math.nan
    evidence = {
        "top_k": k, "band": EDGE_BAND, "n_near_low": n_low, "n_near_high": n_high,
        "top_positions": [num(x, 4) for x in u], "best_position": num(best, 4),
        "best_value_of_param": _plain(top[col].iloc[0]) if len(top) else None,
        "low": param.low, "high": param.high, "scale": param.scale,
        "proposed_low": new_low, "proposed_high": new_high, "metric": metric,
    }
    if edges or sens is None or not sens.insensitive:
        finding = _finding(param, edges, k, n_low, n_high, best, new_low, new_high, ids, evidence)
    else:
        finding = _insensitive(param, sens, k, metric, ids, evidence)
    return BoundaryCheck(
        name=param.name, role=role, scale=param.scale, low=param.low, high=param.high,
        top_trial_ids=tuple(ids.tolist()), top_positions=tuple(u.tolist()), best_position=best,
        n_near_low=n_low, n_near_high=n_high, edges=edges, proposed_low=new_low,
        proposed_high=new_high, sensitivity=sens, finding=finding,
    )


def _insensitive(param: RangeParam, sens: Sensitivity, k: int, metric: str, ids: np.ndarray,
                 evidence: dict) -> Finding:
    parts = ", ".join(format_value(v) for v in sens.part_best)
    seeds = sens.seed_std is not None and NOISE_SEEDS * sens.seed_std >= sens.top_spread
    noise = (f"twice the seed spread ({format_value(sens.seed_std)})" if seeds else
             f"the spread of the top {k} trials ({format_value(sens.top_spread)})")
    message = (f"{param.name}: no visible effect over {param.describe()}: the best {metric} in "
               f"each third of the range ({parts}) differs by {format_value(sens.effect)}, "
               f"within {noise}; insensitive over this range (keep it, or fix it anywhere in it).")
    ev = dict(evidence, part_best=[num(v) for v in sens.part_best], effect=num(sens.effect),
              seed_std=num(sens.seed_std), top_spread=num(sens.top_spread),
              tolerance=num(sens.tolerance))
    return Finding(INSENSITIVE, "info", message, param.name, tuple(int(t) for t in ids), ev)


def _finding(
    param: RangeParam, edges: tuple[str, ...], k: int, n_low: int, n_high: int, best: float,
    new_low: float, new_high: float, ids: np.ndarray, evidence: dict,
) -> Finding:
    name, rng = param.name, param.describe()
    trial_ids = tuple(int(t) for t in ids)
    if edges:
        parts = [f"{n_high if e == 'upper' else n_low} of the top {k} trials sit in the "
                 f"{'top' if e == 'upper' else 'bottom'} 10% of its range" for e in edges]
        if (new_low, new_high) == (param.low, param.high):
            action = "the range is at a natural bound there: consider fixing it at that value"
        else:
            which = " and ".join(f"{e} edge" for e in edges)
            action = f"expand the {which} to search {_describe(param, new_low, new_high)} and rerun"
        message = f"{name}: {' and '.join(parts)} {rng}; {action}."
        return Finding(BOUNDARY, "warn", message, name, trial_ids, evidence)
    if k and (best <= EDGE_BAND or best >= 1.0 - EDGE_BAND):
        edge = "upper" if best >= 1.0 - EDGE_BAND else "lower"
        lo, hi = expand_range(param, (edge,))
        grow = (f"it could grow to {_describe(param, lo, hi)}"
                if (lo, hi) != (param.low, param.high) else "it is at a natural bound there")
        message = (f"{name}: the single best trial sits at the {edge} edge of {rng} but most "
                   f"of the top {k} do not; watch that edge ({grow}).")
        ev = dict(evidence, edge_of_best=edge, proposed_low=lo, proposed_high=hi)
        return Finding(BOUNDARY, "info", message, name, trial_ids[:1], ev)
    positions = [p for p in evidence["top_positions"] if p is not None] or [0.5]
    lo_pos, hi_pos = min(positions), max(positions)
    where = ("are spread across" if hi_pos - lo_pos > 0.8 else "sit well inside")
    message = (f"{name}: the best trials {where} {rng} (top {k} between {lo_pos:.0%} and "
               f"{hi_pos:.0%} of the range) and no edge holds most of them; no need to expand it.")
    return Finding(WELL_INSIDE, "ok", message, name, trial_ids, evidence)


def _describe(param: RangeParam, low: float, high: float) -> str:
    return f"[{format_value(low)}, {format_value(high)}] {param.scale}"


def expand_range(param: RangeParam, edges: tuple[str, ...] | list[str]) -> tuple[float, float]:
    """The range with each edge in ``edges`` ("lower"/"upper") pushed out by half its width.

    Log scales multiply/divide by sqrt(high/low) (staying positive); int scales move by whole
    numbers (at least 1); linear ranges that start at >= 0 stay >= 0 and linear ranges inside
    [0, 1] stay inside [0, 1].
    """
    low, high = param.low, param.high
    if param.is_log:
        factor = (high / low) ** EXPAND_BY
        new_low, new_high = low / factor, high * factor
    else:
        width = EXPAND_BY * (high - low)
        new_low, new_high = low - width, high + width
        if low >= 0:
            new_low = max(new_low, 0.0)
        if low >= 0 and high <= 1 and not param.is_int:
            new_high = min(new_high, 1.0)
    if param.is_int:
        floor = 1 if (param.is_log or low >= 1) else 0 if low >= 0 else -math.inf
        new_low = max(min(math.floor(new_low), int(low) - 1), floor)
        new_high = max(math.ceil(new_high), int(high) + 1)
        low, high = int(low), int(high)
    out_low = _plain(new_low) if "lower" in edges else low
    out_high = _plain(new_high) if "upper" in edges else high
    return out_low, out_high


def narrow_range(
    param: RangeParam, good_low: float, good_high: float
) -> tuple[float, float] | None:
    """A narrower range around ``[good_low, good_high]`` (the good trials' span), or None when
    that would not remove at least 40% of the range; see the module doc for the rule."""
    u_lo, u_hi = (float(x) for x in unit_positions(param, [good_low, good_high]))
    if not (math.isfinite(u_lo) and math.isfinite(u_hi)):
        return None
    u_lo, u_hi = max(0.0, min(u_lo, u_hi) - NARROW_PAD), min(1.0, max(u_lo, u_hi) + NARROW_PAD)
    if u_hi - u_lo > NARROW_MAX_WIDTH:
        return None
    low, high = _at_unit(param, u_lo), _at_unit(param, u_hi)
    if param.is_int:
        lo_int, hi_int = max(int(param.low), math.floor(low)), min(int(param.high), math.ceil(high))
        return (lo_int, hi_int) if lo_int < hi_int else None
    new_low: float = max(param.low, _round_sig(low, math.floor))
    new_high: float = min(param.high, _round_sig(high, math.ceil))
    if param.is_log and new_low <= 0:
        new_low = param.low
    return (_plain(new_low), _plain(new_high)) if new_low < new_high else None


def _at_unit(param: RangeParam, u: float) -> float:
    """The value at unit position ``u`` on the range's continuous scale (no integer bins)."""
    if param.is_log:
        return math.exp(math.log(param.low) + u * (math.log(param.high) - math.log(param.low)))
    return param.low + u * (param.high - param.low)


def _round_sig(x: float, rounding: Any, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits with ``rounding`` (math.floor/ceil)."""
    if x == 0 or not math.isfinite(x):
        return x
    scale = 10.0 ** (math.floor(math.log10(abs(x))) - digits + 1)
    return float(rounding(round(x / scale, 9)) * scale)


def _plain(value: object) -> float:
    """A Python number (ints stay ints) with float noise rounded away."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    v = float(value)  # type: ignore[arg-type]
    return float(f"{v:.6g}") if math.isfinite(v) else v
