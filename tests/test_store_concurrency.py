"""Acceptance: many processes hammer one workspace database and nobody sees an error.

Each child process opens its own ``SQLiteStorage`` on the same file, as engine workers do.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from pathlib import Path
from typing import Any

from engine.store import MetricRow, NewTrial, SQLiteStorage, TrialProgress, TrialState, open_store

N_PROCS = 8
ROWS_PER_PROC = 1_000
BATCH = 10
NAMES = ("train_loss", "val_error")
_CTX = mp.get_context("spawn")


def _report(results: Any, index: int, kind: str, payload: Any) -> None:
    results.put((index, kind, payload))


def _metric_worker(db: str, index: int, trial_id: int, start: Any, results: Any) -> None:
    """Write ROWS_PER_PROC metric rows for ``trial_id`` in batches, with claims and heartbeats."""
    try:
        store = SQLiteStorage(db)
        start.wait(60)
        claimed: list[int] = []
        rows = [
            MetricRow(trial_id, step, name, 1.0 / (step + 1))
            for step in range(ROWS_PER_PROC // len(NAMES)) for name in NAMES
        ]
        for n, first in enumerate(range(0, len(rows), BATCH)):
            store.write_metrics(rows[first:first + BATCH])
            if n % 25 == 0:
                claimed += [t.id for t in store.claim_trials(f"w{index}", "cpu", limit=1)]
                store.heartbeat(claimed, steps_done={t: n for t in claimed})
        for tid in claimed[:1]:
            store.finish_trial(tid, TrialProgress(TrialState.COMPLETED, steps_done=100))
        _report(results, index, "ok", (claimed, None))
    except Exception:  # noqa: BLE001 - any failure is reported to the parent
        _report(results, index, "error", traceback.format_exc())
        raise SystemExit(1)


def _claim_worker(db: str, index: int, start: Any, results: Any) -> None:
    """Claim from the queue until it is empty; report every trial id handed over."""
    try:
        store = SQLiteStorage(db)
        start.wait(60)
        claimed: list[int] = []
        while batch := store.claim_trials(f"w{index}", f"slot{index}", limit=1 + index % 3):
            claimed += [t.id for t in batch]
        _report(results, index, "ok", claimed)
    except Exception:  # noqa: BLE001 - any failure is reported to the parent
        _report(results, index, "error", traceback.format_exc())
        raise SystemExit(1)


def _setup(tmp_path: Path, n_metric: int, n_queue: int) -> tuple[str, list[int], list[int]]:
    store = open_store(tmp_path / "ws")
    exp = store.create_experiment("e", "builtin:x")
    study = store.create_study(exp.id, "s", {"max_train_steps": 100}, seed=0)
    owners = store.add_trials(study.id, [NewTrial({"i": i}, i) for i in range(n_metric)])
    if owners:  # the metric writers' own trials are running, not up for claiming
        store.set_state([t.id for t in owners], TrialState.RUNNING, only_from=[TrialState.QUEUED])
    queued = store.add_trials(study.id, [NewTrial({"q": i}, i) for i in range(n_queue)])
    store.close()
    return str(store.path), [t.id for t in owners], [t.id for t in queued]


def _collect(procs: list[Any], results: Any, deadline: float) -> dict[int, tuple[str, Any]]:
    """Gather one report per child (before joining, so no child blocks on a full pipe)."""
    reports: dict[int, tuple[str, Any]] = {}
    while len(reports) < len(procs) and time.monotonic() < deadline:
        try:
            index, kind, payload = results.get(timeout=0.1)
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break
            continue
        reports[index] = (kind, payload)
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    return reports


def _assert_clean(procs: list[Any], reports: dict[int, tuple[str, Any]]) -> None:
    errors = {i: r[1] for i, r in reports.items() if r[0] != "ok"}
    assert errors == {}, "\n".join(errors.values())
    assert len(reports) == len(procs)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_eight_writers_and_a_polling_reader(tmp_path: Path) -> None:
    db, owners, queued = _setup(tmp_path, N_PROCS, 3 * N_PROCS)
    start, results = _CTX.Barrier(N_PROCS + 1), _CTX.Queue()  # everyone starts at once
    procs = [
        _CTX.Process(target=_metric_worker, args=(db, i, owners[i], start, results))
        for i in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    reader = SQLiteStorage(db)
    start.wait(60)  # every writer and the reader start together
    counts: list[int] = []
    while any(p.is_alive() for p in procs) or not counts:
        counts.append(len(reader.read_metrics()))  # must never raise while writers run
        reader.list_trials(states=[TrialState.RUNNING])
    reports = _collect(procs, results, time.monotonic() + 60)
    _assert_clean(procs, reports)
    assert len(reader.read_metrics()) == N_PROCS * ROWS_PER_PROC
    per_trial = reader.read_metrics_columns()["trial_id"]
    assert sorted(set(per_trial)) == owners
    assert all(per_trial.count(t) == ROWS_PER_PROC for t in owners)
    claimed = [tid for _, (ids, _) in reports.values() for tid in ids]
    assert len(claimed) == len(set(claimed)) and set(claimed) <= set(queued)
    # every read is a consistent snapshot: whole write transactions (BATCH rows each), and
    # never fewer rows than an earlier read saw
    assert all(c % BATCH == 0 for c in counts), sorted({c % BATCH for c in counts})
    assert counts == sorted(counts)


def test_eight_claimers_split_the_queue_exactly(tmp_path: Path) -> None:
    db, _, queued = _setup(tmp_path, 0, 40)
    start, results = _CTX.Barrier(N_PROCS + 1), _CTX.Queue()
    procs = [
        _CTX.Process(target=_claim_worker, args=(db, i, start, results)) for i in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    start.wait(60)  # released together, the children race for real
    reports = _collect(procs, results, time.monotonic() + 60)
    _assert_clean(procs, reports)
    claimed = [tid for _, ids in reports.values() for tid in ids]
    assert sorted(claimed) == queued  # every trial handed out, none twice
    store = SQLiteStorage(db)
    trials = store.list_trials()
    assert all(t.state is TrialState.RUNNING and t.attempt == 1 for t in trials)
    assert {t.worker for t in trials} <= {f"w{i}" for i in range(N_PROCS)}
