"""Study exports as DataFrames: one row per trial, or one row per (trial, step, metric)."""

from __future__ import annotations

import pandas as pd

from engine.store.base import Storage, Study


def trials_table(store: Storage, study: Study) -> pd.DataFrame:
    """id, number, state, kind, seed, each hyperparameter, best value and step, steps, time, error."""
    trials = store.list_trials(study.id)
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    rows = [
        {
            "id": t.id, "number": t.number, "state": t.state.value, "kind": t.kind, "seed": t.seed,
            **{k: t.params.get(k) for k in names},
            "best_value": t.best_value, "best_step": t.best_step, "steps_done": t.steps_done,
            "max_train_steps": t.max_train_steps, "wall_time": round(t.wall_time, 3),
            "attempt": t.attempt, "device": t.device, "error": t.error,
        }
        for t in trials
    ]
    columns = ["id", "number", "state", "kind", "seed", *names, "best_value", "best_step",
               "steps_done", "max_train_steps", "wall_time", "attempt", "device", "error"]
    return pd.DataFrame(rows, columns=columns)


def curves_table(store: Storage, study: Study) -> pd.DataFrame:
    """trial_id, step, metric, value — one row per reported point."""
    rows = store.read_metrics(study_id=study.id)
    return pd.DataFrame(
        {"trial_id": [r.trial_id for r in rows], "step": [r.step for r in rows],
         "metric": [r.name for r in rows], "value": [r.value for r in rows]},
    )
