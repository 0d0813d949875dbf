"""One storage contract, run against every ``Storage`` implementation (optuna's StorageTestCase).

Plus what only the SQLite workspace promises: schema versioning, durability, owner-only
files, refusing network filesystems, and surviving fork.
"""

from __future__ import annotations

import math
import os
import pickle
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.store import (
    SCHEMA_VERSION,
    Checkpoint,
    MemoryStorage,
    MetricRow,
    NewTrial,
    SQLiteStorage,
    Storage,
    StoreError,
    TrialProgress,
    TrialState,
    open_store,
    workspace_path,
)
from engine.store.sqlite_db import filesystem_type, refuse_network_filesystem

SPEC: dict[str, Any] = {"name": "wd", "max_train_steps": 100, "metric": "val_error"}


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    impl: Storage
    if request.param == "postgres":
        from engine.store.postgres import PostgresStorage, init_db

        url = request.getfixturevalue("pg_url")
        init_db(url)
        impl = PostgresStorage(url)
    else:
        impl = MemoryStorage() if request.param == "memory" else open_store(tmp_path / "ws")
    yield impl
    impl.close()


def _study(store: Storage, name: str = "wd", experiment: str = "exp") -> int:
    exp = store.find_experiment(experiment) or store.create_experiment(experiment, "builtin:x")
    return store.create_study(exp.id, name, {**SPEC, "name": name}, seed=7).id


def _enqueue(store: Storage, study_id: int, n: int, **kw: Any) -> list[int]:
    new = [NewTrial(params={"lr": 10.0 ** -i}, seed=i, point_index=i, **kw) for i in range(n)]
    return [t.id for t in store.add_trials(study_id, new)]


class TestStorageContract:
    """Behaviour every implementation must share."""

    def test_experiments(self, store: Storage) -> None:
        a = store.create_experiment("a", "builtin:digits-mlp")
        b = store.create_experiment("b", "pkg.mod:train")
        assert store.get_experiment(a.id) == a
        assert store.find_experiment("b") == b
        assert store.find_experiment("nope") is None
        assert [e.name for e in store.list_experiments()] == ["a", "b"]
        with pytest.raises(StoreError, match="already exists"):
            store.create_experiment("a", "builtin:x")
        with pytest.raises(StoreError, match="12345"):
            store.get_experiment(12345)

    def test_baseline_versions_count_per_experiment(self, store: Storage) -> None:
        a = store.create_experiment("a", "builtin:x")
        b = store.create_experiment("b", "builtin:x")
        v1 = store.add_baseline(a.id, {"lr": 0.1, "opt": "adam"}, "val_error", "min", 1000)
        store.add_baseline(b.id, {"lr": 1.0}, "acc", "max", 50)
        v2 = store.add_baseline(a.id, {"lr": 0.05}, "val_error", "min", 2000, note="wd helps")
        assert (v1.version, v2.version) == (1, 2)
        listed = store.list_baselines(a.id)
        assert [x.version for x in listed] == [1, 2]
        assert listed[0].config == {"lr": 0.1, "opt": "adam"}
        assert listed[1].note == "wd helps" and listed[1].max_train_steps == 2000
        assert [x.version for x in store.list_baselines(b.id)] == [1]
        with pytest.raises(StoreError):
            store.add_baseline(a.id, {}, "val_error", "sideways", 10)
        with pytest.raises(StoreError):
            store.add_baseline(999, {}, "val_error", "min", 10)

    def test_studies_have_unique_names(self, store: Storage) -> None:
        sid = _study(store, "wd")
        exp2 = store.create_experiment("other", "builtin:x")
        with pytest.raises(StoreError, match="already exists"):
            store.create_study(exp2.id, "wd", SPEC, seed=0)
        study = store.get_study(sid)
        assert (study.name, study.seed, study.next_index, study.spec) == ("wd", 7, 0, SPEC)
        assert store.find_study("wd") == study
        assert store.find_study("nope") is None
        other = store.create_study(exp2.id, "lr", SPEC, seed=1, source_path="studies/lr.toml")
        assert [s.name for s in store.list_studies()] == ["wd", "lr"]
        assert store.list_studies(exp2.id) == [other]
        assert store.update_study_spec(sid, {**SPEC, "budget": 20}).spec["budget"] == 20
        with pytest.raises(StoreError, match="4242"):
            store.get_study(4242)

    def test_reserve_points_advances_next_index(self, store: Storage) -> None:
        sid = _study(store)
        assert store.reserve_points(sid, 5) == 0
        assert store.reserve_points(sid, 3) == 5
        assert store.reserve_points(sid, 0) == 8
        assert store.get_study(sid).next_index == 8

    def test_reserve_points_is_atomic_across_threads(self, store: Storage) -> None:
        sid = _study(store)
        firsts: list[int] = []
        def grab() -> None:
            for _ in range(20):
                firsts.append(store.reserve_points(sid, 2))
        threads = [threading.Thread(target=grab) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(firsts) == list(range(0, 160, 2))

    def test_add_list_get_trials(self, store: Storage) -> None:
        sid = _study(store)
        first = store.add_trials(sid, [NewTrial({"lr": 0.1}, seed=1, point_index=0)])
        more = store.add_trials(sid, [
            NewTrial({"lr": 0.2}, seed=2, kind="rerun", max_train_steps=300),
            NewTrial({"lr": 0.3}, seed=3),
        ])
        trials = store.list_trials(sid)
        assert [t.number for t in trials] == [0, 1, 2]
        assert trials == first + more
        t0 = store.get_trial(first[0].id)
        assert (t0.params, t0.seed, t0.state, t0.attempt) == ({"lr": 0.1}, 1, TrialState.QUEUED, 0)
        assert (t0.max_train_steps, more[0].max_train_steps) == (100, 300)
        assert more[0].kind == "rerun" and more[1].point_index == -1
        other = _study(store, "other")
        assert store.add_trials(other, [NewTrial({}, 0)])[0].number == 0
        assert len(store.list_trials()) == 4
        assert store.list_trials(states=[TrialState.RUNNING]) == []
        with pytest.raises(StoreError, match="999"):
            store.get_trial(999)
        with pytest.raises(StoreError):
            store.add_trials(999, [NewTrial({}, 0)])

    def test_returned_params_are_copies(self, store: Storage) -> None:
        sid = _study(store)
        trial = store.add_trials(sid, [NewTrial({"lr": 0.1}, 0)])[0]
        trial.params["lr"] = 5.0  # type: ignore[index]
        assert store.get_trial(trial.id).params == {"lr": 0.1}

    def test_sampler_values_are_stored_as_plain_numbers(self, store: Storage) -> None:
        np = pytest.importorskip("numpy")
        sid = _study(store)
        params = {"lr": np.float64(0.01), "layers": np.int64(3), "bn": np.bool_(True)}
        trial = store.add_trials(sid, [NewTrial(params, seed=np.int64(4))])[0]
        back = store.get_trial(trial.id)
        assert back.params == {"lr": 0.01, "layers": 3, "bn": True} and back.seed == 4
        assert type(back.params["layers"]) is int
        store.claim_trials("w", "cpu")
        store.heartbeat(np.array([trial.id]), steps_done={np.int64(trial.id): np.int64(9)})
        assert store.set_state(np.array([trial.id]), TrialState.CANCELLED,
                               only_from=[TrialState.RUNNING]) == 1
        assert store.get_trial(trial.id).steps_done == 9
        with pytest.raises(StoreError, match="trial params"):
            store.add_trials(sid, [NewTrial({"x": 1}, 0), NewTrial({"f": object()}, 0)])
        assert len(store.list_trials(sid)) == 1  # nothing half-stored

    def test_claim_oldest_first_with_limit_and_study_filter(self, store: Storage) -> None:
        a, b = _study(store, "a"), _study(store, "b")
        ids_a, ids_b = _enqueue(store, a, 3), _enqueue(store, b, 2)
        got = store.claim_trials("w1", "cuda:0", limit=2)
        assert [t.id for t in got] == ids_a[:2]
        assert all(t.state is TrialState.RUNNING and t.attempt == 1 for t in got)
        assert (got[0].worker, got[0].device) == ("w1", "cuda:0")
        assert got[0].started_at is not None and got[0].heartbeat_at is not None
        assert [t.id for t in store.claim_trials("w2", "cpu", limit=5, study_id=b)] == ids_b
        assert [t.id for t in store.claim_trials("w3", "cpu", limit=5)] == ids_a[2:]
        assert store.claim_trials("w4", "cpu") == []
        assert len(store.list_trials(states=[TrialState.RUNNING])) == 5

    def test_claim_never_hands_a_trial_out_twice(self, store: Storage) -> None:
        ids = _enqueue(store, _study(store), 60)
        claimed: list[int] = []
        def worker(name: str) -> None:
            while batch := store.claim_trials(name, "cpu", limit=2):
                claimed.extend(t.id for t in batch)
        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claimed) == ids

    def test_finish_records_and_refuses_finished_trials(self, store: Storage) -> None:
        tid = _enqueue(store, _study(store), 1)[0]
        store.claim_trials("w", "cpu")
        done = store.finish_trial(tid, TrialProgress(
            TrialState.COMPLETED, best_step=40, best_value=0.25, steps_done=100, wall_time=3.5,
        ))
        assert (done.state, done.best_step, done.best_value) == (TrialState.COMPLETED, 40, 0.25)
        assert (done.steps_done, done.wall_time, done.finished_at is not None) == (100, 3.5, True)
        with pytest.raises(StoreError, match="already COMPLETED"):
            store.finish_trial(tid, TrialProgress(TrialState.FAILED, error="late"))
        assert store.get_trial(tid) == done
        with pytest.raises(StoreError):
            store.finish_trial(tid, TrialProgress(TrialState.RUNNING))
        with pytest.raises(StoreError, match="777"):
            store.finish_trial(777, TrialProgress(TrialState.FAILED))

    def test_finish_trials_records_a_group_and_skips_finished_ones(self, store: Storage) -> None:
        a, b, c = _enqueue(store, _study(store), 3)
        store.claim_trials("w", "cpu", limit=3)
        store.set_state([c], TrialState.CANCELLED, only_from=[TrialState.RUNNING])  # cancelled meanwhile
        done = store.finish_trials([
            (a, TrialProgress(TrialState.COMPLETED, best_step=9, best_value=0.5, steps_done=10, wall_time=1.0)),
            (b, TrialProgress(TrialState.DIVERGED, steps_done=4, error="train_loss = nan at step 3")),
            (c, TrialProgress(TrialState.COMPLETED, steps_done=10)),
        ])
        assert done == [a, b]
        ta, tb, tc = (store.get_trial(i) for i in (a, b, c))
        assert (ta.state, ta.best_step, ta.best_value, ta.steps_done) == (TrialState.COMPLETED, 9, 0.5, 10)
        assert ta.finished_at is not None and tb.error == "train_loss = nan at step 3"
        assert tb.state is TrialState.DIVERGED and tc.state is TrialState.CANCELLED
        with pytest.raises(StoreError, match="not an end state"):
            store.finish_trials([(a, TrialProgress(TrialState.PAUSED))])
        assert store.finish_trials([]) == []

    def test_finish_keeps_diverged_and_paused(self, store: Storage) -> None:
        a, b = _enqueue(store, _study(store), 2)
        store.claim_trials("w", "cpu", limit=2)
        bad = store.finish_trial(a, TrialProgress(
            TrialState.DIVERGED, best_value=float("nan"), error="loss is nan at step 12"
        ))
        assert bad.state.is_infeasible() and bad.error == "loss is nan at step 12"
        assert bad.best_value is not None and math.isnan(bad.best_value)
        paused = store.finish_trial(b, TrialProgress(TrialState.PAUSED, steps_done=30))
        assert paused.state is TrialState.PAUSED and paused.finished_at is None
        assert store.set_state([b], TrialState.QUEUED, only_from=[TrialState.PAUSED]) == 1
        assert store.claim_trials("w", "cpu")[0].attempt == 2

    def test_set_state_only_moves_trials_in_only_from(self, store: Storage) -> None:
        ids = _enqueue(store, _study(store), 4)
        store.claim_trials("w", "cpu", limit=2)  # ids[0], ids[1] RUNNING
        moved = store.set_state(
            ids, TrialState.CANCELLED, only_from=[TrialState.QUEUED, TrialState.PAUSED]
        )
        assert moved == 2
        states = [store.get_trial(i).state for i in ids]
        assert states == [TrialState.RUNNING] * 2 + [TrialState.CANCELLED] * 2
        assert store.get_trial(ids[3]).finished_at is not None
        assert store.set_state(ids, TrialState.PAUSED, only_from=[]) == 0
        assert store.set_state([], TrialState.PAUSED, only_from=[TrialState.RUNNING]) == 0
        again = store.set_state(ids[2:], TrialState.QUEUED, only_from=[TrialState.CANCELLED])
        assert again == 2 and store.get_trial(ids[2]).finished_at is None

    def test_heartbeat_touches_running_trials_only(self, store: Storage) -> None:
        a, b = _enqueue(store, _study(store), 2)
        store.claim_trials("w", "cpu")
        before = store.get_trial(a).heartbeat_at
        time.sleep(0.01)
        store.heartbeat([a, b], steps_done={a: 42, b: 7})
        after, other = store.get_trial(a), store.get_trial(b)
        assert after.steps_done == 42 and after.heartbeat_at > before  # type: ignore[operator]
        assert other.heartbeat_at is None and other.steps_done == 0
        store.heartbeat([a])
        assert store.get_trial(a).steps_done == 42

    def test_requeue_stale(self, store: Storage) -> None:
        a, b, c = _enqueue(store, _study(store), 3)
        store.claim_trials("w", "cpu", limit=2)  # a, b running; c queued
        assert store.requeue_stale(time.time() - 3600) == []
        time.sleep(0.01)
        store.heartbeat([b])
        cutoff = store.get_trial(b).heartbeat_at
        stale = store.requeue_stale(cutoff)  # type: ignore[arg-type]
        assert [t.id for t in stale] == [a] and stale[0].state is TrialState.QUEUED
        assert store.get_trial(b).state is TrialState.RUNNING
        retried = store.claim_trials("w2", "cpu", limit=2)
        assert [t.id for t in retried] == [a, c] and retried[0].attempt == 2

    def test_metrics_upsert_one_row_per_key(self, store: Storage) -> None:
        t1, t2 = _enqueue(store, _study(store), 2)
        store.write_metrics([MetricRow(t1, s, "val_error", 1.0 / (s + 1)) for s in range(3)])
        store.write_metrics([MetricRow(t1, 1, "val_error", 0.9), MetricRow(t1, 1, "loss", 2.0)])
        store.write_metrics([MetricRow(t2, 0, "val_error", 0.7)])
        store.write_metrics([])
        rows = store.read_metrics()
        assert [(r.trial_id, r.step, r.name, r.value) for r in rows] == [
            (t1, 0, "val_error", 1.0), (t1, 1, "loss", 2.0), (t1, 1, "val_error", 0.9),
            (t1, 2, "val_error", 1.0 / 3), (t2, 0, "val_error", 0.7),
        ]
        assert rows[0] == MetricRow(t1, 0, "val_error", 1.0)
        assert hash(rows[0]) == hash(MetricRow(t1, 0, "val_error", 1.0))

    def test_metric_filters(self, store: Storage) -> None:
        sid, other = _study(store, "a"), _study(store, "b")
        t1, t2 = _enqueue(store, sid, 2)
        (t3,) = _enqueue(store, other, 1)
        store.write_metrics([
            MetricRow(t, s, n, float(s)) for t in (t1, t2, t3) for s in range(4)
            for n in ("loss", "val_error")
        ])
        assert {r.trial_id for r in store.read_metrics(study_id=other)} == {t3}
        assert {r.trial_id for r in store.read_metrics(trial_ids=[t1, t3])} == {t1, t3}
        assert store.read_metrics(trial_ids=[]) == []
        only = store.read_metrics(trial_ids=[t2], names=["loss"], since_step=2)
        assert [(r.step, r.name) for r in only] == [(2, "loss"), (3, "loss")]
        cols = store.read_metrics_columns(study_id=sid, names=["val_error"])
        rows = store.read_metrics(study_id=sid, names=["val_error"])
        assert cols == {
            "trial_id": [r.trial_id for r in rows], "step": [r.step for r in rows],
            "name": [r.name for r in rows], "value": [r.value for r in rows],
        }

    def test_non_finite_metrics_round_trip(self, store: Storage) -> None:
        (tid,) = _enqueue(store, _study(store), 1)
        values = [float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324, 3]
        store.write_metrics([MetricRow(tid, s, "loss", v) for s, v in enumerate(values)])
        back = [r.value for r in store.read_metrics()]
        assert math.isnan(back[0]) and back[1:3] == [math.inf, -math.inf]
        assert back[3:] == [0.0, 1e308, 5e-324, 3.0]
        assert all(isinstance(v, float) for v in back)
        col = store.read_metrics_columns()["value"]
        assert math.isnan(col[0]) and col[1:] == back[1:]

    def test_metrics_for_missing_trial_are_refused(self, store: Storage) -> None:
        with pytest.raises(StoreError):
            store.write_metrics([MetricRow(31337, 0, "loss", 1.0)])

    def test_checkpoints_upsert_per_kind(self, store: Storage) -> None:
        (tid,) = _enqueue(store, _study(store), 1)
        store.record_checkpoint(Checkpoint(tid, "latest", 10, "ckpt/1/latest.pt", None, 1.0))
        store.record_checkpoint(Checkpoint(tid, "best", 10, "ckpt/1/best.pt", 0.5, 1.0))
        store.record_checkpoint(Checkpoint(tid, "latest", 20, "ckpt/1/latest.pt", 0.7, 2.0))
        assert store.get_checkpoints(tid) == [
            Checkpoint(tid, "best", 10, "ckpt/1/best.pt", 0.5, 1.0),
            Checkpoint(tid, "latest", 20, "ckpt/1/latest.pt", 0.7, 2.0),
        ]
        assert store.get_checkpoints(tid + 1) == []

    def test_decisions(self, store: Storage) -> None:
        exp = store.create_experiment("e", "builtin:x")
        sid = _study(store, experiment="e")
        d = store.record_decision(
            exp.id, sid, "adopt", {"weight_decay": 1e-4}, 1, "welch t-test",
            {"candidate": {"mean": 0.1, "std": 0.01}, "p": 0.003, "n": 5}, "clear win", "one knob",
        )
        store.record_decision(exp.id, None, "inconclusive", {}, 2, "welch", {}, "noisy", "")
        listed = store.list_decisions(exp.id)
        assert listed[0] == d and listed[0].stats["candidate"]["mean"] == 0.1
        assert [x.verdict for x in listed] == ["adopt", "inconclusive"]
        assert listed[1].study_id is None
        assert store.list_decisions() == listed
        with pytest.raises(StoreError):
            store.record_decision(exp.id, None, "maybe", {}, 1, "t", {}, "", "")

    def test_meta(self, store: Storage) -> None:
        assert store.get_meta("engine.pid") is None
        store.set_meta("engine.pid", "123")
        store.set_meta("engine.pid", "456")
        assert store.get_meta("engine.pid") == "456"
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        with pytest.raises(StoreError):
            store.set_meta("schema_version", "2")


# --------------------------------------------------------------------------- SQLite only


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "tuneplay.db"
    SQLiteStorage(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as err:
        SQLiteStorage(db)
    assert str(err.value) == (
        f"{db}: workspace schema version 99 is newer than this tuneplay reads "
        f"({SCHEMA_VERSION}); upgrade tuneplay"
    )


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="not a tuneplay workspace"):
        SQLiteStorage(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        SQLiteStorage(junk)


def test_reopen_keeps_data(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ws")
    sid = _study(store)
    (tid,) = _enqueue(store, sid, 1)
    store.write_metrics([MetricRow(tid, 0, "loss", float("nan"))])
    store.close()
    again = open_store(tmp_path / "ws")
    assert again.get_study(sid).name == "wd" and again.get_trial(tid).params == {"lr": 1.0}
    assert math.isnan(again.read_metrics()[0].value)


def test_workspace_files_are_owner_only(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    store = open_store(ws)
    store.set_meta("k", "v")
    assert stat.S_IMODE(ws.stat().st_mode) == 0o700
    assert (ws / "checkpoints").is_dir() and (ws / "logs").is_dir()
    for name in ("tuneplay.db", "tuneplay.db-wal", "tuneplay.db-shm"):
        assert stat.S_IMODE((ws / name).stat().st_mode) == 0o600, name


def test_workspace_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNEPLAY_WORKSPACE", raising=False)
    assert workspace_path(None) == tmp_path / ".tuneplay"
    monkeypatch.setenv("TUNEPLAY_WORKSPACE", str(tmp_path / "env"))
    assert workspace_path(None) == tmp_path / "env"
    assert workspace_path("explicit") == tmp_path / "explicit"


def test_network_filesystems_are_refused(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "user@host:/x /mnt/my\\040box fuse.sshfs rw 0 0\n"
        "/dev/vdb /mnt/shared/local ext4 rw 0 0\n"
    )
    assert filesystem_type("/mnt/shared/ws/tuneplay.db", mounts) == "nfs4"
    assert filesystem_type("/mnt/shared/local/ws", mounts) == "ext4"
    assert filesystem_type("/mnt/sharedx", mounts) == "ext4"
    assert filesystem_type("/mnt/my box/ws", mounts) == "fuse.sshfs"
    with pytest.raises(StoreError, match="network filesystem \\(nfs4\\)"):
        refuse_network_filesystem("/mnt/shared/ws", mounts)
    refuse_network_filesystem("/home/me/ws", mounts)
    assert filesystem_type("/x", tmp_path / "no-such-file") is None


def test_store_is_usable_after_fork(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ws")
    (tid,) = _enqueue(store, _study(store), 1)
    pid = os.fork()
    if pid == 0:  # child: must reconnect on its own, never touch the parent's connection
        code = 1
        try:
            store.write_metrics([MetricRow(tid, 5, "loss", 0.5)])
            code = 0 if store.claim_trials("child", "cpu")[0].id == tid else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.read_metrics()[0].value == 0.5
    assert store.get_trial(tid).worker == "child"


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ws")
    ids = _enqueue(store, _study(store), 4)
    errors: list[BaseException] = []
    def write(tid: int) -> None:
        try:
            for s in range(50):
                store.write_metrics([MetricRow(tid, s, "loss", float(s))])
                store.list_trials()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=write, args=(t,)) for t in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store.read_metrics()) == 200


def test_store_pickles_for_spawned_workers(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ws")
    sid = _study(store)
    copy = pickle.loads(pickle.dumps(store))  # reconnects on its own
    assert copy.path == store.path and copy.get_study(sid).name == "wd"


def test_grouped_claim_takes_the_oldest_and_its_group(store: Storage) -> None:
    exp = store.create_experiment("e", "builtin:digits-mlp")
    study = store.create_study(exp.id, "s", {"max_train_steps": 10}, 0)
    keys = ["A", "B", "A", "", "A", "A", "B"]
    store.add_trials(study.id, [NewTrial({"i": i}, seed=i, group_key=k) for i, k in enumerate(keys)])
    assert store.next_queued_group_key() == "A"
    first = store.claim_trials("w", "cpu", limit=3, group=True)
    assert [t.params["i"] for t in first] == [0, 2, 4]
    second = store.claim_trials("w", "cpu", limit=3, group=True)
    assert [t.params["i"] for t in second] == [1, 6]
    third = store.claim_trials("w", "cpu", limit=3, group=True)
    assert [t.params["i"] for t in third] == [3]  # an empty key never groups
    assert [t.params["i"] for t in store.claim_trials("w", "cpu", limit=3, group=True)] == [5]
    assert store.next_queued_group_key() is None
