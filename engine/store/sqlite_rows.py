"""Rows of the workspace database <-> the protocol's frozen records.

Non-finite floats survive the trip: SQLite would store a REAL NaN as NULL, so values that
may be non-finite live in columns without type affinity, as REAL or as TEXT 'nan'/'inf'.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engine.kinds import Mode, TrialKind, Verdict
from engine.store.base import (
    Baseline,
    Checkpoint,
    Decision,
    Experiment,
    MetricRow,
    Study,
    Trial,
    TrialState,
)

TRIAL_COLS = (
    "id, study_id, number, params, seed, state, attempt, point_index, kind, max_train_steps, "
    "created_at, started_at, finished_at, heartbeat_at, device, worker, best_step, best_value, "
    "steps_done, wall_time, error, group_key, host, lease_token, lease_expires"
)
STUDY_COLS = "id, experiment_id, name, spec, seed, next_index, created_at, source_path"
BASELINE_COLS = (
    "id, experiment_id, version, config, metric, mode, max_train_steps, note, created_at"
)
DECISION_COLS = (
    "id, experiment_id, study_id, verdict, candidate, baseline_version, test, stats, "
    "rationale, complexity_note, created_at"
)


def encode_float(value: float | None) -> float | str | None:
    """A float as SQLite keeps it faithfully: REAL when finite, else 'nan' / 'inf' / '-inf'."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def decode_float(value: Any) -> float | None:
    """Reverse :func:`encode_float`."""
    if value is None or value.__class__ is float:
        return value
    return float(value)


def experiment_from_row(r: Sequence[Any]) -> Experiment:
    return Experiment(r[0], r[1], r[2], r[3])


def baseline_from_row(r: Sequence[Any]) -> Baseline:
    return Baseline(r[0], r[1], r[2], json.loads(r[3]), r[4], Mode(r[5]), r[6], r[7], r[8])


def study_from_row(r: Sequence[Any]) -> Study:
    return Study(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7])


def trial_from_row(r: Sequence[Any]) -> Trial:
    return Trial(
        id=r[0], study_id=r[1], number=r[2], params=json.loads(r[3]), seed=r[4],
        state=TrialState(r[5]), attempt=r[6], point_index=r[7], kind=TrialKind(r[8]),
        max_train_steps=r[9], created_at=r[10], started_at=r[11], finished_at=r[12],
        heartbeat_at=r[13], device=r[14], worker=r[15], best_step=r[16],
        best_value=decode_float(r[17]), steps_done=r[18], wall_time=r[19], error=r[20],
        group_key=r[21], host=r[22], lease_token=r[23], lease_expires=r[24],
    )


def checkpoint_from_row(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(r[0], r[1], r[2], r[3], decode_float(r[4]), r[5])


def decision_from_row(r: Sequence[Any]) -> Decision:
    return Decision(
        r[0], r[1], r[2], Verdict(r[3]), json.loads(r[4]), r[5], r[6], json.loads(r[7]), r[8], r[9], r[10]
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while millions of acyclic rows are built.

    Otherwise every few hundred thousand new objects trigger a collection pass that scans
    the growing result and frees nothing: about a third of a 2M-row read.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def metric_rows(rows: list[tuple[Any, ...]]) -> list[MetricRow]:
    """Build MetricRows in bulk.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    filling the instance ``__dict__`` directly gives equal objects about twice as fast (a
    second saved per 2M rows), at ~60 more bytes a row. Big analyses should prefer
    :meth:`SQLiteStorage.read_metrics_columns`.
    """
    dec = float  # values are REAL, or TEXT 'nan' / 'inf' / '-inf' (see encode_float)
    if hasattr(MetricRow, "__slots__"):  # no instance __dict__ to fill: the plain way
        return [MetricRow(t, s, n, v if v.__class__ is float else dec(v)) for t, s, n, v in rows]
    new, cls = object.__new__, MetricRow
    out: list[MetricRow] = []
    append = out.append
    for t, s, n, v in rows:
        row = new(cls)
        fields = row.__dict__
        fields["trial_id"], fields["step"], fields["name"] = t, s, n
        fields["value"] = v if v.__class__ is float else dec(v)
        append(row)
    return out
