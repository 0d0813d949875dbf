"""Rules both storage implementations enforce, so they fail the same way on bad input."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.kinds import Mode, Verdict
from engine.store.base import NewTrial, StoreError, Study

MODES = tuple(Mode)
VERDICTS = tuple(Verdict)


def check_mode(mode: str) -> None:
    """A baseline's metric is minimized or maximized, nothing else."""
    if mode not in MODES:
        raise StoreError(f"baseline mode {mode!r}: expected one of {MODES}")


def check_verdict(verdict: str) -> None:
    """A decision adopts, rejects or stays inconclusive."""
    if verdict not in VERDICTS:
        raise StoreError(f"decision verdict {verdict!r}: expected one of {VERDICTS}")


def check_meta_key(key: str) -> None:
    """Refuse keys the store itself owns."""
    if key == "schema_version":
        raise StoreError("meta key 'schema_version' is managed by the store")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars from samplers
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def to_json(value: Mapping[str, Any], what: str) -> str:
    """``value`` as stored JSON; numpy scalars become Python numbers, anything else odd fails.

    Raises:
        StoreError: naming ``what`` (e.g. "trial params") and the offending type.
    """
    try:
        return json.dumps(dict(value), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: cannot store {exc}") from exc


def trial_max_train_steps(study: Study, new: NewTrial) -> int:
    """The trial's own ``max_train_steps``, else the study's."""
    steps = new.max_train_steps
    if steps is None:
        steps = study.spec.get("max_train_steps")
    if steps is None:
        raise StoreError(f"study {study.name!r} has no max_train_steps; give one per trial")
    return int(steps)


def progress_entry(value: Any) -> tuple[int | None, int | None, float | None]:
    """A heartbeat's progress entry: steps done, or (steps done, best step, best value)."""
    if value is None:
        return None, None, None
    if isinstance(value, (tuple, list)):
        steps, best_step, best_value = (list(value) + [None, None, None])[:3]
        return (
            None if steps is None else int(steps),
            None if best_step is None else int(best_step),
            None if best_value is None else float(best_value),
        )
    return int(value), None, None
