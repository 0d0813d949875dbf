"""Study exports as DataFrames: one row per trial, or one row per (trial, step, metric)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from engine.store.base import Storage, Study, Trial

HP_PREFIX = "hp."  # the analysis frames' prefix too (engine.analysis.frames.HP_PREFIX)
FIELDS_BEFORE = ("id", "number", "state", "kind", "seed")
FIELDS_AFTER = ("best_value", "best_step", "steps_done", "max_train_steps", "wall_time",
                "attempt", "host", "worker", "device", "error")


def trials_table(store: Storage, study: Study) -> pd.DataFrame:
    """id, number, state, kind, seed, each hyperparameter, best value and step, steps, time, error.

    One column per name: a hyperparameter named like a trial field (``device``, ``seed``,
    ``state``, ``error``...) is written as ``hp.<name>`` (``hp.device``) beside the field;
    every other hyperparameter keeps its plain name.
    """
    trials = store.list_trials(study.id)
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    columns = hp_columns(names)
    rows = [_row(t, columns) for t in trials]
    return pd.DataFrame(rows, columns=[*FIELDS_BEFORE, *columns.values(), *FIELDS_AFTER])


def hp_columns(names: Sequence[str]) -> dict[str, str]:
    """Hyperparameter name -> its column: the name, or ``hp.<name>`` where a field has it."""
    fields = {*FIELDS_BEFORE, *FIELDS_AFTER}
    taken = fields | set(names)
    out = {}
    for name in names:
        column = name
        if name in fields:
            column = HP_PREFIX + name
            while column in taken:  # a hyperparameter may itself be named "hp.device"
                column = HP_PREFIX + column
            taken.add(column)
        out[name] = column
    return out


def _row(t: Trial, columns: dict[str, str]) -> dict[str, object]:
    return {
        "id": t.id, "number": t.number, "state": t.state.value, "kind": t.kind, "seed": t.seed,
        **{col: t.params.get(name) for name, col in columns.items()},
        "best_value": t.best_value, "best_step": t.best_step, "steps_done": t.steps_done,
        "max_train_steps": t.max_train_steps, "wall_time": round(t.wall_time, 3),
        "attempt": t.attempt, "host": t.host, "worker": t.worker, "device": t.device, "error": t.error,
    }


def curves_table(store: Storage, study: Study) -> pd.DataFrame:
    """trial_id, step, metric, value — one row per reported point."""
    rows = store.read_metrics(study_id=study.id)
    return pd.DataFrame(
        {"trial_id": [r.trial_id for r in rows], "step": [r.step for r in rows],
         "metric": [r.name for r in rows], "value": [r.value for r in rows]},
    )
