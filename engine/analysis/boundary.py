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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.analysis.findings import BOUNDARY, WELL_INSIDE, Finding, num
from engine.analysis.frames import hp_column, ranked_results, top_k_count, unit_positions
from engine.space import RangeParam, format_value
from engine.spec import StudySpec

EDGE_BAND = 0.10  # the outer part of the range, on its scale
EDGE_SHARE = 0.5  # the share of the top k in the band that flags an edge
EXPAND_BY = 0.5  # extend a flagged edge by this fraction of the range's width


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
        finding: the boundary / well_inside finding.
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
    finding: Finding


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
    top = ranked.iloc[:k]
    checks = []
    for param in spec.searched:
        col = hp_column(param.name)
        if isinstance(param, RangeParam) and col in top:
            role = spec.role_of(param.name) or "nuisance"
            checks.append(_check(param, role, top, col, spec.metric))
    return tuple(checks)


def _check(param: RangeParam, role: str, top: pd.DataFrame, col: str, metric: str) -> BoundaryCheck:
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
    finding = _finding(param, edges, k, n_low, n_high, best, new_low, new_high, ids, evidence)
    return BoundaryCheck(
        name=param.name, role=role, scale=param.scale, low=param.low, high=param.high,
        top_trial_ids=tuple(ids.tolist()), top_positions=tuple(u.tolist()), best_position=best,
        n_near_low=n_low, n_near_high=n_high, edges=edges, proposed_low=new_low,
        proposed_high=new_high, finding=finding,
    )


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


def _plain(value: object) -> float:
    """A Python number (ints stay ints) with float noise rounded away."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    v = float(value)  # type: ignore[arg-type]
    return float(f"{v:.6g}") if math.isfinite(v) else v
