"""The infeasible fraction: how many finished trials diverged or failed, and where.

Infeasible trials (DIVERGED: NaN/inf; FAILED: an error) are data about where training
breaks, not noise. Over the judged trials (COMPLETED + DIVERGED + FAILED; cancelled ones say
nothing about the point), more than 20% infeasible is a warning. For each range
hyperparameter the mean position (on its scale, 0 = low, 1 = high) of infeasible trials is
compared with that of completed ones; a gap of at least 0.25 names where they concentrate.
For a categorical one, a value whose infeasible rate is at least half and twice the overall
rate is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.findings import INFEASIBLE_FRACTION, Finding, num
from engine.analysis.frames import JUDGED_STATES, hp_column, search_trials, unit_positions
from engine.space import ChoiceParam, Param, format_value
from engine.spec import StudySpec

HIGH_INFEASIBLE = 0.20  # warn above this fraction of judged trials
POSITION_GAP = 0.25  # mean-position gap (infeasible vs feasible) that counts as concentrated


@dataclass(frozen=True)
class Concentration:
    """Where infeasible trials sit along one hyperparameter compared with completed ones.

    For a range: ``infeasible_position``/``feasible_position`` are mean positions on its
    scale and ``toward`` is ``"upper"``/``"lower"``. For a categorical: ``value`` is the
    choice with the highest infeasible rate, ``value_rate`` that rate. ``notable`` is True
    when the pattern passes the thresholds in the module docstring.
    """

    name: str
    infeasible_position: float | None
    feasible_position: float | None
    toward: str | None
    value: Any
    value_rate: float | None
    notable: bool


@dataclass(frozen=True)
class InfeasibleSummary:
    """Counts and fraction of infeasible trials, where they concentrate, and the finding."""

    n_judged: int
    n_infeasible: int
    n_diverged: int
    n_failed: int
    fraction: float
    infeasible_trial_ids: tuple[int, ...]
    concentrations: tuple[Concentration, ...]
    common_error: str
    finding: Finding


def infeasible_summary(trials: pd.DataFrame, spec: StudySpec) -> InfeasibleSummary | None:
    """The infeasible fraction of a study's search (None while no trial has finished); seed
    reruns of its best points and of the baseline would only dilute it."""
    searched = search_trials(trials)
    judged = searched[searched["state"].isin(JUDGED_STATES)]
    if judged.empty:
        return None
    diverged = judged["state"] == "DIVERGED"
    failed = judged["state"] == "FAILED"
    bad = (diverged | failed).to_numpy()
    fraction = float(bad.mean())
    conc = tuple(_concentration(p, judged, bad, fraction) for p in spec.searched
                 if hp_column(p.name) in judged) if 0 < bad.sum() < len(bad) else ()
    errors = judged.loc[failed, "error"].astype(str)
    errors = errors[errors.str.len() > 0]
    common = str(errors.value_counts().index[0]) if len(errors) else ""
    ids = tuple(int(t) for t in judged["trial_id"].to_numpy()[bad])
    finding = _finding(len(judged), int(diverged.sum()), int(failed.sum()), fraction, conc,
                       common, ids)
    return InfeasibleSummary(len(judged), int(bad.sum()), int(diverged.sum()), int(failed.sum()),
                             fraction, ids, conc, common, finding)


def _concentration(
    param: Param, judged: pd.DataFrame, bad: np.ndarray, overall: float
) -> Concentration:
    values = judged[hp_column(param.name)]
    if isinstance(param, ChoiceParam):
        rates = pd.Series(bad, index=values.index).groupby(values).mean()
        if rates.empty:
            return Concentration(param.name, None, None, None, None, None, False)
        value, rate = rates.idxmax(), float(rates.max())
        notable = rate >= 0.5 and rate >= 2 * overall
        return Concentration(param.name, None, None, None, value, rate, notable)
    u = unit_positions(param, values.to_numpy())
    bad_pos, ok_pos = float(np.nanmean(u[bad])), float(np.nanmean(u[~bad]))
    gap = bad_pos - ok_pos
    toward = "upper" if gap > 0 else "lower"
    return Concentration(param.name, bad_pos, ok_pos, toward, None, None,
                         bool(abs(gap) >= POSITION_GAP))


def _finding(n: int, n_div: int, n_fail: int, fraction: float, conc: tuple[Concentration, ...],
             common: str, ids: tuple[int, ...]) -> Finding:
    evidence: dict[str, Any] = {
        "n_judged": n, "n_diverged": n_div, "n_failed": n_fail, "fraction": num(fraction, 4),
        "threshold": HIGH_INFEASIBLE, "common_error": common,
        "concentrations": [{"name": c.name, "infeasible_position": num(c.infeasible_position, 4),
                            "feasible_position": num(c.feasible_position, 4), "toward": c.toward,
                            "value": c.value, "value_rate": num(c.value_rate, 4),
                            "notable": c.notable} for c in conc],
    }
    if fraction == 0:
        return Finding(INFEASIBLE_FRACTION, "ok", f"None of the {n} finished trials diverged "
                       "or failed.", "study", (), evidence)
    notable = sorted((c for c in conc if c.notable), key=_strength, reverse=True)
    where = "; they concentrate at " + ", ".join(_where(c) for c in notable[:2]) if notable else ""
    head = (f"{fraction:.0%} of the {n} finished trials are infeasible "
            f"({n_div} diverged, {n_fail} failed){where}")
    if fraction <= HIGH_INFEASIBLE:
        return Finding(INFEASIBLE_FRACTION, "info", head + ".", "study", ids, evidence)
    if notable:
        action = "narrow the ranges there, or stabilise training (warmup, gradient clipping)"
    else:
        action = "check the training setup before spending more budget"
    if n_fail and common:
        action += f"; most common error: {common[:120]!r}"
    return Finding(INFEASIBLE_FRACTION, "warn", f"{head}: {action}.", "study", ids, evidence)


def _strength(c: Concentration) -> float:
    if c.infeasible_position is not None and c.feasible_position is not None:
        return abs(c.infeasible_position - c.feasible_position)
    return c.value_rate or 0.0


def _where(c: Concentration) -> str:
    if c.value is not None:
        return f"{c.name}={format_value(c.value)} ({c.value_rate:.0%} infeasible)"
    return (f"the {c.toward} end of {c.name} (mean position {c.infeasible_position:.2f} vs "
            f"{c.feasible_position:.2f} for completed trials)")
