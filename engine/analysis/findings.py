"""The one shape every analysis result speaks in: a :class:`Finding`.

A finding is a sentence a practitioner reads ("the best trials sit at the upper edge of
learning_rate: expand it to ..."), a stable ``kind`` the CLI and the TUI can key on, a
``severity`` that orders the report (warn first), the trials behind it, and the numbers
that back it (``evidence``, always JSON-able).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Severity = Literal["warn", "info", "ok"]
SEVERITY_ORDER: dict[str, int] = {"warn": 0, "info": 1, "ok": 2}

# Stable finding kinds (the CLI's JSON and the TUI key on these strings).
BOUNDARY = "boundary"
WELL_INSIDE = "well_inside"
INSENSITIVE = "insensitive"
SPARSE_SAMPLING = "sparse_sampling"
DENSE_SAMPLING = "dense_sampling"
OVERFITTING = "overfitting"
HIGH_VARIANCE = "high_variance"
STILL_IMPROVING = "still_improving"
SATURATED_EARLY = "saturated_early"
TRAIN_LOSS_RISING = "train_loss_rising"
CLEAN_CURVE = "clean_curve"
BEST_CHECKPOINT_EARLY = "best_checkpoint_early"
BEST_CHECKPOINT_LATE = "best_checkpoint_late"
BEST_CHECKPOINT_OK = "best_checkpoint_ok"
INFEASIBLE_FRACTION = "infeasible_fraction"
BUDGET_SENSITIVITY = "budget_sensitivity"
ISOLATION = "isolation"
NO_RESULTS = "no_results"
BATCH_SCALING = "batch_scaling"
SEED_IGNORED = "seed_ignored"
STEPS_PAST_BUDGET = "steps_past_budget"


@dataclass(frozen=True)
class Finding:
    """One thing the analysis noticed, with what to do about it.

    Attributes:
        kind: stable id, one of the module-level constants (e.g. ``"boundary"``).
        severity: ``"warn"`` (act on it), ``"info"`` (worth knowing) or ``"ok"`` (checked, fine).
        message: one sentence for the practitioner, including the suggested action.
        subject: a hyperparameter name, ``"trial <id>"`` or ``"study"``.
        trial_ids: the trials the finding rests on.
        evidence: the numbers behind it (steps, values, thresholds); JSON-able.
    """

    kind: str
    severity: Severity
    message: str
    subject: str = "study"
    trial_ids: tuple[int, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (numpy numbers become Python numbers, NaN becomes None)."""
        return {
            "kind": self.kind, "severity": self.severity, "subject": self.subject,
            "trial_ids": [int(t) for t in self.trial_ids], "message": self.message,
            "evidence": jsonable(dict(self.evidence)),
        }


def sort_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Warn first, then info, then ok; otherwise in the order they were produced."""
    return tuple(sorted(findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)))


def jsonable(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays, tuples and NaN into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _plain_list(value) or [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)


def _plain_list(values: list | tuple) -> list | None:
    """Fast path for long homogeneous lists of Python floats/ints/strs (plot data)."""
    if not values or type(values[0]) not in (float, int, str):
        return None
    kind = type(values[0])
    if not all(type(v) is kind for v in values):
        return None
    if kind is float and not np.isfinite(np.fromiter(values, float, len(values))).all():
        return [v if math.isfinite(v) else None for v in values]
    return list(values)


def num(value: Any, digits: int = 6) -> float | None:
    """A rounded Python float for evidence (None for NaN/inf/None)."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def opt_float(value: Any) -> float | None:
    """A Python float, or None for None/NaN/inf (for plot data, unrounded)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None
