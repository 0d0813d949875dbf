"""What only the PostgreSQL store promises: many processes on one queue, schema versions and
upgrades, surviving a server restart, the coordinator lock, leases fenced by the server's clock.

The shared contract (tests/test_store_contract.py) runs on PostgreSQL too; these tests cover
what SQLite and memory cannot show. Each test gets a fresh database (``pg_url``).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from engine.store import (
    SCHEMA_VERSION,
    Checkpoint,
    MetricRow,
    NewTrial,
    StoreError,
    TrialProgress,
    TrialState,
)
from engine.store.base import LeaseLost
from engine.store.postgres import PostgresStorage, init_db, redact_url
from tests.pg_cluster import PgCluster, free_port

pytestmark = pytest.mark.postgres
_CTX = mp.get_context("spawn")


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStorage]:
    init_db(pg_url)
    impl = PostgresStorage(pg_url)
    yield impl
    impl.close()


def _study(store: PostgresStorage, name: str = "s") -> int:
    exp = store.find_experiment("e") or store.create_experiment("e", "builtin:x")
    return store.create_study(exp.id, name, {"max_train_steps": 100}, seed=0).id


def _enqueue(store: PostgresStorage, study_id: int, n: int, **kw: Any) -> list[int]:
    return [t.id for t in store.add_trials(study_id, [NewTrial({"i": i}, i, **kw) for i in range(n)])]


def _sql(url: str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _backend_pid(store: PostgresStorage) -> int:
    """The server process behind this process's connection of ``store``."""
    row = store._run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone())
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- many processes


def _claimer(url: str, index: int, start: Any, results: Any) -> None:
    try:
        store = PostgresStorage(url)
        start.wait(60)
        claimed: list[int] = []
        while batch := store.claim_trials(f"w{index}", "cpu", limit=1 + index % 3, host=f"h{index}"):
            claimed += [t.id for t in batch]
        results.put((index, "ok", claimed))
    except Exception:  # noqa: BLE001 - any failure is reported to the parent
        results.put((index, "error", traceback.format_exc()))


def _adder(url: str, index: int, start: Any, results: Any) -> None:
    try:
        store = PostgresStorage(url)
        study = store.find_study("s")
        assert study is not None
        start.wait(60)
        numbers = []
        for batch in range(20):
            added = store.add_trials(study.id, [NewTrial({"p": index, "b": batch}, 0)] * 2)
            numbers += [t.number for t in added]
        results.put((index, "ok", numbers))
    except Exception:  # noqa: BLE001 - any failure is reported to the parent
        results.put((index, "error", traceback.format_exc()))


def _in_processes(target: Callable[..., None], url: str, n: int) -> dict[int, Any]:
    """Run ``target(url, index, start, results)`` in ``n`` spawned processes released at once."""
    start, results = _CTX.Event(), _CTX.Queue()
    procs = [_CTX.Process(target=target, args=(url, i, start, results)) for i in range(n)]
    for p in procs:
        p.start()
    start.set()
    reports: dict[int, Any] = {}
    try:
        for _ in procs:
            index, kind, payload = results.get(timeout=180)
            assert kind == "ok", f"process {index} failed:\n{payload}"
            reports[index] = payload
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return reports


def test_claims_from_many_processes_hand_out_each_trial_once(store: PostgresStorage) -> None:
    ids = _enqueue(store, _study(store), 500)
    reports = _in_processes(_claimer, store.url, 8)
    claimed = [tid for got in reports.values() for tid in got]
    assert sorted(claimed) == ids  # none twice, none lost
    by_worker = {t.id: t for t in store.list_trials(states=[TrialState.RUNNING])}
    assert len(by_worker) == 500
    for index, got in reports.items():
        assert all(by_worker[t].worker == f"w{index}" and by_worker[t].host == f"h{index}"
                   for t in got)
    assert all(t.attempt == 1 and len(t.lease_token) == 32 for t in by_worker.values())
    assert len({t.lease_token for t in by_worker.values()}) == 500


def test_concurrent_add_trials_number_without_collisions(store: PostgresStorage) -> None:
    _study(store)
    reports = _in_processes(_adder, store.url, 6)
    numbers = sorted(n for got in reports.values() for n in got)
    assert numbers == list(range(6 * 20 * 2))
    for got in reports.values():  # a batch gets consecutive numbers
        assert all(b - a == 1 for a, b in zip(got[::2], got[1::2]))


# --------------------------------------------------------------------------- schema


def test_missing_schema_is_refused_in_one_line(pg_url: str) -> None:
    with pytest.raises(StoreError) as err:
        PostgresStorage(pg_url)
    assert str(err.value) == (
        f"{pg_url}: no tuneplay schema in this database; run `tuneplay db init --store {pg_url}`"
    )


def test_schema_version_mismatch_is_refused_in_one_line(pg_url: str) -> None:
    assert init_db(pg_url) == f"created schema version {SCHEMA_VERSION}"
    _sql(pg_url, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as err:
        PostgresStorage(pg_url)
    assert str(err.value) == (
        f"{pg_url}: schema version 2, this tuneplay expects {SCHEMA_VERSION}; "
        f"run `tuneplay db init --store {pg_url}` to upgrade it"
    )
    _sql(pg_url, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99, this tuneplay expects \d+; upgrade tuneplay$"):
        PostgresStorage(pg_url)
    with pytest.raises(StoreError, match="newer than this tuneplay's"):
        init_db(pg_url)


def test_init_db_is_idempotent_and_upgrades_step_by_step(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.store import postgres_db as postgres  # the schema and its migrations

    assert init_db(pg_url) == f"created schema version {SCHEMA_VERSION}"
    assert init_db(pg_url) == f"schema version {SCHEMA_VERSION} is current"
    store = PostgresStorage(pg_url)
    (tid,) = _enqueue(store, _study(store), 1)
    store.close()
    nxt = SCHEMA_VERSION + 1
    broken = (nxt, ("ALTER TABLE trials ADD COLUMN note TEXT NOT NULL DEFAULT ''", "SELECT nonsense"))
    monkeypatch.setattr(postgres, "MIGRATIONS", (*postgres.MIGRATIONS, broken))
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", nxt)
    with pytest.raises(StoreError, match="nonsense"):
        init_db(pg_url)  # one transaction: a failing step leaves the old schema whole
    assert _sql(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    columns = "SELECT 1 FROM information_schema.columns WHERE table_name = 'trials' AND column_name = 'note'"
    assert _sql(pg_url, columns) == []
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION}, this tuneplay expects {nxt}"):
        PostgresStorage(pg_url)
    step = (nxt, ("ALTER TABLE trials ADD COLUMN note TEXT NOT NULL DEFAULT ''",))
    monkeypatch.setattr(postgres, "MIGRATIONS", (*postgres.MIGRATIONS[:-1], step))
    assert init_db(pg_url) == f"upgraded {SCHEMA_VERSION} -> {nxt}"
    assert init_db(pg_url) == f"schema version {nxt} is current"
    assert PostgresStorage(pg_url).get_trial(tid).params == {"i": 0}  # data kept
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", nxt + 1)  # a step missing from the list
    with pytest.raises(StoreError, match=f"no upgrade path from schema version {nxt} to {nxt + 1}"):
        init_db(pg_url)


def test_concurrent_init_db_creates_the_schema_once(pg_url: str) -> None:
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(init_db(pg_url))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [f"created schema version {SCHEMA_VERSION}"] + (
        [f"schema version {SCHEMA_VERSION} is current"] * 3
    )


# --------------------------------------------------------------------------- connections


def test_a_server_restart_mid_study_loses_no_writes(store: PostgresStorage, pg_server: PgCluster) -> None:
    (tid,) = _enqueue(store, _study(store), 1)
    lease = store.claim_trials("w", "cpu")[0].lease_token
    started = _sql(store.url, "SELECT pg_postmaster_start_time()")[0][0]
    halfway, restarted = threading.Event(), threading.Event()
    def restart() -> None:
        halfway.wait(60)
        pg_server.restart()
        restarted.set()
    thread = threading.Thread(target=restart)
    thread.start()
    step, after = 0, 0
    while after < 50:  # keep writing through the restart, and 50 writes past it
        assert store.write_metrics([MetricRow(tid, step, "loss", step / 7)], leases={tid: lease}) == []
        assert store.renew({tid: lease}, {tid: step}) == {tid: TrialState.RUNNING}
        step += 1
        if step == 50:
            halfway.set()
        after += restarted.is_set()
    thread.join()
    assert _sql(store.url, "SELECT pg_postmaster_start_time()")[0][0] > started
    assert [r.step for r in store.read_metrics()] == list(range(step))
    assert store.get_trial(tid).steps_done == step - 1


def test_a_cut_connection_is_remade_transparently(store: PostgresStorage) -> None:
    sid = _study(store)
    backend = _backend_pid(store)
    _sql(store.url, "SELECT pg_terminate_backend(%s)", (backend,))
    assert store.get_study(sid).name == "s"
    assert _backend_pid(store) != backend


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    port = free_port()
    url = f"postgresql://tuner:s3cret@127.0.0.1:{port}/study?sslmode=disable&password=s3cret"
    assert redact_url(url) == f"postgresql://tuner@127.0.0.1:{port}/study?sslmode=disable"
    began = time.monotonic()
    with pytest.raises(StoreError) as err:
        PostgresStorage(url, retry_s=1.0)
    message = str(err.value)
    assert message.startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}/study: ")
    assert "\n" not in message and "s3cret" not in message
    assert 1.0 <= time.monotonic() - began < 15
    assert "s3cret" not in redact_url(f"host=127.0.0.1 port={port} password=s3cret dbname=x")


def test_repr_and_errors_never_show_a_password(store: PostgresStorage, pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    other = PostgresStorage(with_password)
    assert "hunter2" not in repr(other) and repr(other) == f"PostgresStorage({pg_url!r})"
    with pytest.raises(StoreError) as err:
        other.get_trial(424242)
    assert "hunter2" not in str(err.value) and "424242" in str(err.value)
    other.close()


def test_store_is_usable_after_fork_without_touching_the_parents_session(
    store: PostgresStorage,
) -> None:
    (tid,) = _enqueue(store, _study(store), 1)
    backend = _backend_pid(store)
    pid = os.fork()
    if pid == 0:  # child: its own connection; closing must not end the parent's session
        code = 1
        try:
            store.write_metrics([MetricRow(tid, 5, "loss", 0.5)])
            code = 0 if store.claim_trials("child", "cpu")[0].id == tid else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _backend_pid(store) == backend
    assert store.read_metrics()[0].value == 0.5 and store.get_trial(tid).worker == "child"


def test_store_pickles_without_its_connection(store: PostgresStorage) -> None:
    sid = _study(store)
    assert store.try_coordinator()
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url and copy.get_study(sid).name == "s"
    assert not copy.is_coordinator() and store.is_coordinator()  # the lock stays with its holder
    copy.close()


# --------------------------------------------------------------------------- coordinator


def test_one_coordinator_at_a_time_and_release_hands_over(
    store: PostgresStorage, pg_url: str, pg_server: PgCluster
) -> None:
    other = PostgresStorage(pg_url)
    assert not store.is_coordinator()  # never tried
    assert store.try_coordinator() and store.try_coordinator()  # idempotent
    assert not other.try_coordinator() and not other.is_coordinator()
    assert store.is_coordinator()
    store.release_coordinator()
    assert not store.is_coordinator()
    assert other.try_coordinator() and not store.try_coordinator()
    pg_server.restart()  # the holder's session is gone; it wins the lock back when free
    assert other.is_coordinator() and not store.try_coordinator()
    pg_server.restart()
    assert store.try_coordinator()  # first after the restart
    assert not other.is_coordinator()  # lost it, and cannot win it back
    other.close()
    store.close()  # closing gives the lock up
    third = PostgresStorage(pg_url)
    assert third.try_coordinator()
    third.close()


# --------------------------------------------------------------------------- leases


def test_claims_carry_a_lease_by_the_servers_clock(
    store: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = _enqueue(store, _study(store), 1)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host's clock is an hour off
    before = store.db_time()
    (got,) = store.claim_trials("w", "cuda:1", host="node7", lease_seconds=30)
    after = store.db_time()
    assert (got.id, got.host, got.device) == (a, "node7", "cuda:1")
    assert got.lease_expires is not None and got.started_at is not None
    assert got.lease_expires == got.started_at + 30 and before <= got.started_at <= after
    assert abs(before - real()) < 5
    assert store.expired_leases() == []


def test_expired_leases_by_the_servers_clock(store: PostgresStorage) -> None:
    sid = _study(store)
    short, _ = _enqueue(store, sid, 2)
    store.claim_trials("w", "cpu", lease_seconds=0.3)
    store.claim_trials("w", "cpu", lease_seconds=60)
    asked = store.add_running(sid, [NewTrial({"asked": 1}, 0)], worker="notebook")[0]
    assert (asked.state, asked.attempt, asked.worker, asked.lease_token) == (
        TrialState.RUNNING, 1, "notebook", "")
    assert asked.lease_expires is None and asked.number == 2
    deadline = store.get_trial(short).lease_expires
    assert deadline is not None
    while store.db_time() <= deadline:
        time.sleep(0.05)
    assert [t.id for t in store.expired_leases()] == [short]
    assert store.claim_trials("w", "cpu") == []  # an asked trial is never claimed


def test_a_stale_token_writes_nothing(store: PostgresStorage) -> None:
    tid, other = _enqueue(store, _study(store), 2)
    old = store.claim_trials("w1", "cpu")[0].lease_token
    assert store.set_state([tid], TrialState.QUEUED, only_from=[TrialState.RUNNING]) == 1
    requeued = store.get_trial(tid)
    assert (requeued.lease_token, requeued.lease_expires) == ("", None)
    new = store.claim_trials("w2", "cpu")[0]
    assert new.id == tid and new.attempt == 2 and new.lease_token not in ("", old)
    stale, held = {tid: old}, {tid: new.lease_token}
    rows = [MetricRow(tid, 1, "loss", 0.5), MetricRow(other, 1, "loss", 0.5)]
    assert store.write_metrics(rows, leases=stale) == [tid, other]  # other: no lease given
    assert store.read_metrics() == []
    assert store.record_checkpoints([Checkpoint(tid, "latest", 1, "a1/latest.pt", None, 1.0)],
                                    leases=stale) == [tid]
    with pytest.raises(LeaseLost):
        store.record_checkpoint(Checkpoint(tid, "best", 1, "a1/best.pt", 0.5, 1.0), lease=old)
    assert store.get_checkpoints(tid) == []
    with pytest.raises(LeaseLost):
        store.finish_trial(tid, TrialProgress(TrialState.COMPLETED, steps_done=1), lease=old)
    assert store.finish_trials([(tid, TrialProgress(TrialState.FAILED))], leases=stale) == []
    assert store.set_state([tid], TrialState.PAUSED, only_from=[TrialState.RUNNING], leases=stale) == 0
    before = store.get_trial(tid)
    assert before.state is TrialState.RUNNING and before.lease_token == new.lease_token
    assert store.renew(stale, {tid: 99}) == {tid: None}
    assert store.get_trial(tid) == before  # a lost lease's renew touches nothing
    assert store.write_metrics(rows[:1], leases=held) == []
    assert store.record_checkpoints([Checkpoint(tid, "latest", 2, "a2/latest.pt", None, 2.0)],
                                    leases=held) == []
    renewed = store.renew(held, {tid: (3, 2, 0.25)}, lease_seconds=120)
    assert renewed == {tid: TrialState.RUNNING}
    after = store.get_trial(tid)
    assert (after.steps_done, after.best_step, after.best_value) == (3, 2, 0.25)
    assert after.lease_expires > before.lease_expires  # type: ignore[operator]
    done = store.finish_trial(tid, TrialProgress(TrialState.COMPLETED, steps_done=3), lease=new.lease_token)
    assert (done.state, done.lease_token, done.lease_expires) == (TrialState.COMPLETED, "", None)
    assert store.renew(held) == {tid: TrialState.COMPLETED}  # the end state, not "lost"
    assert [r.trial_id for r in store.read_metrics()] == [tid]


def test_leaving_running_always_clears_the_lease(store: PostgresStorage) -> None:
    a, b, c, d = _enqueue(store, _study(store), 4)
    leases = {t.id: t.lease_token for t in store.claim_trials("w", "cpu", limit=4)}
    assert store.set_state([a], TrialState.CANCELLED, only_from=[TrialState.RUNNING]) == 1
    assert store.renew({a: leases[a]}) == {a: TrialState.CANCELLED}  # a user's cancel
    assert store.finish_trials([(b, TrialProgress(TrialState.COMPLETED))], leases=leases) == [b]
    assert store.set_state([c], TrialState.PAUSED, only_from=[TrialState.RUNNING], leases=leases) == 1
    assert store.renew({c: leases[c]}) == {c: None}  # paused: the holder's lease is gone
    store.heartbeat([d])
    assert [t.id for t in store.requeue_stale(store.db_time() + 1)] == [d]
    for trial in (store.get_trial(i) for i in (a, b, c, d)):
        assert (trial.lease_token, trial.lease_expires) == ("", None), trial.state
        assert trial.host == "" and trial.worker == "w"


def test_disk_full_checkpoints_claim_nothing(
    pg_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.store import postgres

    init_db(pg_url)
    store = PostgresStorage(pg_url, checkpoints=tmp_path)
    (tid,) = _enqueue(store, _study(store), 1)
    monkeypatch.setattr(postgres, "disk_full", lambda path: f"disk full: {path}")
    assert store.claim_trials("w", "cpu") == []
    assert store.get_trial(tid).state is TrialState.QUEUED
    monkeypatch.undo()
    assert [t.id for t in store.claim_trials("w", "cpu")] == [tid]
    store.close()


# --------------------------------------------------------------------------- ordering, meta


def test_grouped_claims_stay_within_the_study(store: PostgresStorage) -> None:
    a, b = _study(store, "a"), _study(store, "b")
    store.add_trials(a, [NewTrial({"i": 0}, 0, group_key="K")])
    store.add_trials(b, [NewTrial({"i": i}, i, group_key=k) for i, k in enumerate("KKJ")])
    store.add_trials(a, [NewTrial({"i": 1}, 1, group_key="K")])
    assert store.next_queued_group_key() == "K"
    got = store.claim_trials("w", "cpu", limit=4, study_id=b, group=True)
    assert [(t.study_id, t.params["i"]) for t in got] == [(b, 0), (b, 1)]
    got = store.claim_trials("w", "cpu", limit=4, group=True)
    assert [(t.study_id, t.params["i"]) for t in got] == [(a, 0), (a, 1)]


def test_names_sort_in_byte_order_whatever_the_collation(store: PostgresStorage) -> None:
    (tid,) = _enqueue(store, _study(store), 1)
    names = ["b", "B", "a", "A", "_x", "é"]
    store.write_metrics([MetricRow(tid, 0, n, 1.0) for n in names])
    assert [r.name for r in store.read_metrics()] == sorted(names)
    assert store.read_metrics_columns()["name"] == sorted(names)
    for kind in ("latest", "best", "Best"):
        store.record_checkpoint(Checkpoint(tid, kind, 1, kind, None, 1.0))
    assert [c.kind for c in store.get_checkpoints(tid)] == ["Best", "best", "latest"]


def test_repeated_keys_in_one_batch_keep_the_last_value(store: PostgresStorage) -> None:
    (tid,) = _enqueue(store, _study(store), 1)
    rows = [MetricRow(tid, s % 3, "loss", float(s)) for s in range(9)]
    store.write_metrics(rows)
    assert [(r.step, r.value) for r in store.read_metrics()] == [(0, 6.0), (1, 7.0), (2, 8.0)]
    big = [MetricRow(tid, s % 6000, "v", float(s)) for s in range(12_000)]  # the COPY path
    store.write_metrics(big + [MetricRow(tid, 0, "v", math.nan)])
    values = store.read_metrics_columns(names=["v"])["value"]
    assert len(values) == 6000 and math.isnan(values[0]) and values[1:] == [float(6001 + s) for s in range(5999)]


def test_list_and_delete_meta_by_literal_prefix(store: PostgresStorage) -> None:
    for key in ("engine.host.b", "engine.host.a", "engine_host", "enginexhost.c"):
        store.set_meta(key, key.upper())
    assert store.list_meta("engine.host.") == {"engine.host.a": "ENGINE.HOST.A", "engine.host.b": "ENGINE.HOST.B"}
    assert list(store.list_meta("engine_")) == ["engine_host"]
    store.delete_meta("engine.host.a")
    store.delete_meta("never.set")
    assert list(store.list_meta("engine.")) == ["engine.host.b"]
    assert store.list_meta("schema_") == {"schema_version": str(SCHEMA_VERSION)}
    with pytest.raises(StoreError):
        store.delete_meta("schema_version")
