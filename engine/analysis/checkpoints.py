"""Where the best checkpoints land, and what that says about ``max_train_steps``.

Playbook, "Deciding how long to train": with retrospective checkpoint selection, the step of
each trial's best checkpoint tells whether training is too short (best checkpoints pile up at
the end: lengthen, and revisit the decay schedule, which interacts with it) or too long (they
land in the first 10%: shorten). Rule: more than half of the feasible trials in the first 10%
of training -> ``best_checkpoint_early``; at least 40% in the last 25% ->
``best_checkpoint_late``; otherwise ``best_checkpoint_ok``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.analysis.findings import (
    BEST_CHECKPOINT_EARLY,
    BEST_CHECKPOINT_LATE,
    BEST_CHECKPOINT_OK,
    Finding,
    num,
)
from engine.analysis.frames import feasible_mask
from engine.spec import StudySpec

N_BINS = 10
EARLY_FRACTION, EARLY_SHARE = 0.10, 0.50  # > 50% of best checkpoints in the first 10%
LATE_FRACTION, LATE_SHARE = 0.75, 0.40  # >= 40% of best checkpoints in the last 25%
SHORTEN_MARGIN = 1.5  # new max_train_steps: 1.5 x the 90th percentile best step
LENGTHEN_BY = 1.5  # new max_train_steps when best checkpoints land late


@dataclass(frozen=True)
class BestCheckpoints:
    """Histogram of best_step / max_train_steps over feasible trials, with advice.

    Attributes:
        bin_edges: 11 edges over [0, 1]; ``counts`` the 10 bin counts.
        n_trials: feasible trials with a best step.
        share_early, share_late: share of them in the first 10% / the last 25% of training.
        median_fraction: the median best_step / max_train_steps.
        suggested_max_train_steps: a new value when the advice is to change it, else None.
        finding: best_checkpoint_early / _late (warn) or best_checkpoint_ok.
    """

    bin_edges: tuple[float, ...]
    counts: tuple[int, ...]
    n_trials: int
    share_early: float
    share_late: float
    median_fraction: float
    suggested_max_train_steps: int | None
    finding: Finding


def best_checkpoints(trials: pd.DataFrame, spec: StudySpec) -> BestCheckpoints | None:
    """Where the feasible trials' best checkpoints land (None with fewer than 3 of them)."""
    ok = trials[feasible_mask(trials) & np.isfinite(trials["best_step"].to_numpy(float))]
    if len(ok) < 3:
        return None
    horizon = ok["max_train_steps"].to_numpy(float)
    horizon = np.where(horizon > 0, horizon, float(spec.max_train_steps))
    steps = ok["best_step"].to_numpy(float)
    frac = np.clip(steps / horizon, 0.0, 1.0)
    counts, edges = np.histogram(frac, bins=N_BINS, range=(0.0, 1.0))
    early, late = float(np.mean(frac < EARLY_FRACTION)), float(np.mean(frac >= LATE_FRACTION))
    ids = tuple(int(t) for t in ok["trial_id"].to_numpy())
    evidence = {
        "n_trials": len(ok), "share_early": num(early, 4), "share_late": num(late, 4),
        "median_fraction": num(float(np.median(frac)), 4), "counts": counts.tolist(),
        "max_train_steps": spec.max_train_steps,
        "best_step_p90": num(float(np.quantile(steps, 0.9))),
    }
    suggested, finding = _advice(spec, steps, early, late, float(np.median(frac)), ids, evidence)
    return BestCheckpoints(
        bin_edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts),
        n_trials=len(ok), share_early=early, share_late=late,
        median_fraction=float(np.median(frac)), suggested_max_train_steps=suggested,
        finding=finding,
    )


def _advice(
    spec: StudySpec, steps: np.ndarray, early: float, late: float, median: float,
    ids: tuple[int, ...], evidence: dict,
) -> tuple[int | None, Finding]:
    current = spec.max_train_steps
    if early > EARLY_SHARE:
        new = round_up_steps(max(SHORTEN_MARGIN * float(np.quantile(steps, 0.9)), spec.eval_every))
        new = min(new, current)
        message = (f"{early:.0%} of the best checkpoints land in the first 10% of training: "
                   f"max_train_steps {current} is longer than needed; try about {new} next round.")
        return new, Finding(BEST_CHECKPOINT_EARLY, "warn", message, "study", ids,
                            dict(evidence, suggested_max_train_steps=new))
    if late >= LATE_SHARE:
        new = round_up_steps(LENGTHEN_BY * current)
        message = (f"{late:.0%} of the best checkpoints land in the last 25% of training: "
                   f"training may be too short; try max_train_steps about {new} next round "
                   f"and revisit the learning-rate decay schedule with it.")
        return new, Finding(BEST_CHECKPOINT_LATE, "warn", message, "study", ids,
                            dict(evidence, suggested_max_train_steps=new))
    message = (f"Best checkpoints land mid-training (median at {median:.0%} of "
               f"max_train_steps {current}): they show no sign that training is too short or "
               f"too long.")
    return None, Finding(BEST_CHECKPOINT_OK, "ok", message, "study", ids, evidence)


def round_up_steps(x: float) -> int:
    """Round up to two significant digits (1234 -> 1300): a step count a person would pick."""
    if x <= 0:
        return 1
    scale = 10 ** max(math.floor(math.log10(x)) - 1, 0)
    return int(math.ceil(x / scale) * scale)
