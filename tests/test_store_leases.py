"""Leases and fencing, the same on every store: a worker's writes land only while it holds
its trial's lease; a requeued or reclaimed trial refuses the old holder's writes.

Plus SQLite's ordered migrations: workspaces of every older schema open and upgrade.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store import (
    SCHEMA_VERSION,
    Checkpoint,
    LeaseLost,
    MemoryStorage,
    MetricRow,
    NewTrial,
    Storage,
    TrialProgress,
    TrialState,
    open_store,
)

SPEC: dict[str, Any] = {"name": "wd", "max_train_steps": 100, "metric": "val_error"}


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        impl: Storage = MemoryStorage()
    elif request.param == "sqlite":
        impl = open_store(tmp_path / "ws")
    else:
        from engine.store.postgres import PostgresStorage, init_db

        url = request.getfixturevalue("pg_url")
        init_db(url)
        impl = PostgresStorage(url)
    yield impl
    impl.close()


def _queued(store: Storage, n: int, group_key: str = "") -> list[int]:
    exp = store.create_experiment("exp", "builtin:x")
    study = store.create_study(exp.id, "wd", SPEC, seed=7)
    new = [NewTrial(params={"lr": 0.1 * (i + 1)}, seed=i, point_index=i, group_key=group_key)
           for i in range(n)]
    return [t.id for t in store.add_trials(study.id, new)]


def _done(value: float = 0.5) -> TrialProgress:
    return TrialProgress(TrialState.COMPLETED, best_step=3, best_value=value, steps_done=4)


def test_a_claim_gives_each_trial_a_lease_by_the_stores_clock(store: Storage) -> None:
    _queued(store, 3)
    before = store.db_time()
    claimed = store.claim_trials("w0", "cpu", limit=2, host="a", lease_seconds=30)
    tokens = {t.lease_token for t in claimed}
    assert len(tokens) == 2 and "" not in tokens
    for t in claimed:
        assert t.host == "a" and t.state is TrialState.RUNNING and t.attempt == 1
        assert t.lease_expires is not None and before + 29 < t.lease_expires < store.db_time() + 31


def test_renew_extends_a_held_lease_and_reports_a_lost_one(store: Storage) -> None:
    _queued(store, 2)
    a, b = store.claim_trials("w0", "cpu", limit=2, lease_seconds=1)
    states = store.renew({a.id: a.lease_token, b.id: "not-the-token"}, {a.id: (7, 5, 0.25)},
                         lease_seconds=100)
    assert states == {a.id: TrialState.RUNNING, b.id: None}
    after = store.get_trial(a.id)
    assert after.lease_expires is not None and after.lease_expires > store.db_time() + 90
    assert (after.steps_done, after.best_step, after.best_value) == (7, 5, 0.25)
    assert store.get_trial(b.id).steps_done == 0  # not held: untouched


def test_renew_reports_a_cancel_as_the_finished_state(store: Storage) -> None:
    _queued(store, 1)
    (t,) = store.claim_trials("w0", "cpu")
    store.set_state([t.id], TrialState.CANCELLED, only_from=[TrialState.RUNNING])
    assert store.renew({t.id: t.lease_token}) == {t.id: TrialState.CANCELLED}


def test_expired_leases_are_found_and_a_requeue_fences_the_old_holder(store: Storage) -> None:
    _queued(store, 2)
    old, fresh = store.claim_trials("w0", "cpu", limit=2, lease_seconds=0.05)
    store.renew({fresh.id: fresh.lease_token}, lease_seconds=60)
    time.sleep(0.2)
    assert [t.id for t in store.expired_leases()] == [old.id]
    assert store.set_state([old.id], TrialState.QUEUED, only_from=[TrialState.RUNNING],
                           leases={old.id: old.lease_token}) == 1
    requeued = store.get_trial(old.id)
    assert (requeued.lease_token, requeued.lease_expires) == ("", None)
    (again,) = store.claim_trials("w1", "cpu", host="b", lease_seconds=60)
    assert again.id == old.id and again.attempt == 2 and again.lease_token != old.lease_token

    # the first holder wakes up: none of its writes land, the new holder's do
    stale, current = {old.id: old.lease_token}, {old.id: again.lease_token}
    assert store.write_metrics([MetricRow(old.id, 3, "val_error", 9.0)], leases=stale) == [old.id]
    assert store.write_metrics([MetricRow(old.id, 3, "val_error", 0.3)], leases=current) == []
    assert [r.value for r in store.read_metrics([old.id])] == [0.3]
    cp = Checkpoint(old.id, "latest", 3, "/ckpt/a1/latest.pt", None, time.time())
    with pytest.raises(LeaseLost):
        store.record_checkpoint(cp, lease=old.lease_token)
    assert store.record_checkpoints([cp], leases=stale) == [old.id]
    assert store.get_checkpoints(old.id) == []
    store.record_checkpoint(Checkpoint(old.id, "latest", 3, "/ckpt/a2/latest.pt", None, 1.0),
                            lease=again.lease_token)
    assert [c.path for c in store.get_checkpoints(old.id)] == ["/ckpt/a2/latest.pt"]
    assert store.renew(stale) == {old.id: None}
    with pytest.raises(LeaseLost):
        store.finish_trial(old.id, _done(9.0), lease=old.lease_token)
    assert store.finish_trials([(old.id, _done(9.0))], leases=stale) == []
    assert store.set_state([old.id], TrialState.PAUSED, only_from=[TrialState.RUNNING], leases=stale) == 0
    assert store.get_trial(old.id).state is TrialState.RUNNING
    store.finish_trial(old.id, _done(0.3), lease=again.lease_token)
    done = store.get_trial(old.id)
    assert (done.state, done.best_value, done.lease_token, done.host) == (
        TrialState.COMPLETED, 0.3, "", "b")


def test_fenced_group_writes_keep_the_held_trials_and_drop_the_rest(store: Storage) -> None:
    ids = _queued(store, 3, group_key="g")
    group = store.claim_trials("w0", "cpu", limit=3, group=True)
    assert [t.id for t in group] == ids
    leases = {t.id: t.lease_token for t in group}
    store.set_state([ids[1]], TrialState.QUEUED, only_from=[TrialState.RUNNING])  # expired, requeued
    rows = [MetricRow(i, 0, "val_error", 1.0) for i in ids]
    assert store.write_metrics(rows, leases=leases) == [ids[1]]
    assert sorted({r.trial_id for r in store.read_metrics(ids)}) == [ids[0], ids[2]]
    assert store.finish_trials([(i, _done()) for i in ids], leases=leases) == [ids[0], ids[2]]
    assert store.get_trial(ids[1]).state is TrialState.QUEUED


def test_unfenced_writes_still_work(store: Storage) -> None:
    (tid,) = _queued(store, 1)
    store.claim_trials("w0", "cpu")
    assert store.write_metrics([MetricRow(tid, 0, "val_error", 1.0)]) == []
    store.finish_trial(tid, _done())
    assert store.get_trial(tid).state is TrialState.COMPLETED


def test_asked_trials_run_without_a_lease_and_never_expire(store: Storage) -> None:
    exp = store.create_experiment("exp", "builtin:x")
    study = store.create_study(exp.id, "wd", SPEC, seed=7)
    (t,) = store.add_running(study.id, [NewTrial(params={"lr": 0.1}, seed=1)], worker="ask")
    assert (t.state, t.attempt, t.worker, t.lease_token, t.lease_expires) == (
        TrialState.RUNNING, 1, "ask", "", None)
    assert store.claim_trials("w0", "cpu") == []
    assert store.expired_leases() == []
    store.finish_trial(t.id, _done())
    assert store.get_trial(t.id).state is TrialState.COMPLETED


def test_meta_by_prefix(store: Storage) -> None:
    store.set_meta("engine.host.a", "1")
    store.set_meta("engine.host.b", "2")
    store.set_meta("engine.heartbeat", "3")
    assert store.list_meta("engine.host.") == {"engine.host.a": "1", "engine.host.b": "2"}
    store.delete_meta("engine.host.a")
    assert store.list_meta("engine.host.") == {"engine.host.b": "2"}


# --------------------------------------------------------------------------- SQLite migrations

# The trials table as schema versions 1 and 2 made it (before fusion groups; before leases).
_TRIALS_V1 = """CREATE TABLE trials (
    id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
    number INTEGER NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL,
    state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, point_index INTEGER NOT NULL,
    kind TEXT NOT NULL, max_train_steps INTEGER NOT NULL, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, heartbeat_at REAL, device TEXT NOT NULL DEFAULT '',
    worker TEXT NOT NULL DEFAULT '', best_step INTEGER, best_value,
    steps_done INTEGER NOT NULL DEFAULT 0, wall_time REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '', UNIQUE (study_id, number))"""


def _old_workspace(tmp_path: Path, version: int) -> Path:
    """A workspace database as tuneplay of schema ``version`` wrote it, holding one finished
    trial with a curve."""
    from engine.store.sqlite_db import SCHEMA

    db = tmp_path / "ws" / "tuneplay.db"
    db.parent.mkdir()
    trials_sql = _TRIALS_V1 if version == 1 else _TRIALS_V1.replace(
        "error TEXT NOT NULL DEFAULT '',", "error TEXT NOT NULL DEFAULT '', group_key TEXT NOT NULL DEFAULT '',")
    with sqlite3.connect(db) as conn:
        for statement in SCHEMA:
            conn.execute(trials_sql if statement.lstrip().startswith("CREATE TABLE trials") else statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        conn.execute("INSERT INTO experiments VALUES (1, 'exp', 'builtin:x', 1.0)")
        conn.execute("INSERT INTO studies VALUES (1, 1, 'wd', ?, 7, 1, 1.0, '')",
                     ('{"name": "wd", "max_train_steps": 100, "metric": "val_error"}',))
        conn.execute("INSERT INTO trials (id, study_id, number, params, seed, state, attempt, "
                     "point_index, kind, max_train_steps, created_at, best_value) VALUES "
                     "(1, 1, 0, '{\"lr\": 0.1}', 1, 'COMPLETED', 1, 0, 'search', 100, 1.0, 0.25)")
        conn.execute("INSERT INTO metrics VALUES (1, 0, 'val_error', 0.5), (1, 1, 'val_error', 0.25)")
        conn.execute("INSERT INTO trials (id, study_id, number, params, seed, state, attempt, "
                     "point_index, kind, max_train_steps, created_at, heartbeat_at) VALUES "
                     "(2, 1, 1, '{\"lr\": 0.2}', 2, 'RUNNING', 1, 1, 'search', 100, 1.0, 10.0)")
    return db


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_workspace_is_upgraded_in_order_with_a_backup(tmp_path: Path, version: int) -> None:
    db = _old_workspace(tmp_path, version)
    store = open_store(db.parent)
    trial, running = store.list_trials()
    assert (trial.state, trial.best_value, trial.group_key, trial.host, trial.lease_token) == (
        TrialState.COMPLETED, 0.25, "", "", "")
    # a trial that was running holds a lease that has long expired: the engine resumes it
    assert running.lease_token and running.lease_expires == 15.0
    assert [t.id for t in store.expired_leases()] == [2]
    store.set_state([2], TrialState.QUEUED, only_from=[TrialState.RUNNING])
    assert [r.value for r in store.read_metrics([1])] == [0.5, 0.25]
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    # the upgraded workspace works as a new one does
    (new,) = store.add_trials(1, [NewTrial(params={"lr": 0.3}, seed=3)])
    claimed = store.claim_trials("w0", "cpu", limit=2, host="a")
    assert [t.id for t in claimed] == [2, new.id] and all(t.lease_token for t in claimed)
    store.close()
    backup = db.with_name(f"tuneplay.db.v{version}.bak")
    with sqlite3.connect(backup) as conn:  # the copy is the old schema, untouched
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(version),)
    assert backup.stat().st_mode & 0o777 == 0o600
    open_store(db.parent).close()  # opening again: nothing more to do
