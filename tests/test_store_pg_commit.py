"""A connection lost during COMMIT, on a real PostgreSQL server: the store asks the server
whether the transaction committed before running it again, so nothing is written twice.

The cut is made by a TCP relay between the store and the server that drops the connection at
the next COMMIT message: after the server answered it (the answer lost), before the server saw
it (the transaction aborted when the server notices), or holding the server's side open (a
network partition: the server keeps the transaction open until its process is ended).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine.store import NewTrial, TrialProgress, TrialState
from engine.store.postgres import PostgresStorage, init_db
from tests.pg_cluster import PgCluster

pytestmark = pytest.mark.postgres
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the simple-query message psycopg sends to commit


class CutAtCommit:
    """Relays 127.0.0.1:``self.port`` to the server; once ``arm``-ed, cuts the connection at
    the next COMMIT ("after": the server commits, its answer is dropped; "before": COMMIT never
    reaches the server, both sides closed; "hold": COMMIT never reaches it, its side left open)."""

    def __init__(self, server_port: int) -> None:
        self.server_port, self.mode, self.cuts = server_port, "", 0
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str) -> None:
        self.mode = mode

    def close(self) -> None:
        self.listener.close()
        for sock in self.held:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.server_port))
            link: dict[str, Any] = {"mute": False, "answered": threading.Event()}
            threading.Thread(target=self._up, args=(client, server, link), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, link), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, link: dict[str, Any]) -> None:
        while data := _recv(client):
            mode = self.mode
            if mode and COMMIT in data:
                self.mode, self.cuts = "", self.cuts + 1
                if mode == "after":
                    link["mute"] = True
                    server.sendall(data)
                    link["answered"].wait(10)  # the server committed and answered
                if mode == "hold":
                    self.held.append(server)
                else:
                    server.close()
                client.close()
                return
            server.sendall(data)
        server.close()

    def _down(self, server: socket.socket, client: socket.socket, link: dict[str, Any]) -> None:
        while data := _recv(server):
            if link["mute"]:
                link["answered"].set()
                continue
            try:
                client.sendall(data)
            except OSError:
                return
        client.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def relay(pg_server: PgCluster) -> Iterator[CutAtCommit]:
    proxy = CutAtCommit(pg_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def store(pg_url: str, relay: CutAtCommit) -> Iterator[PostgresStorage]:
    init_db(pg_url)
    url = pg_url.replace(f":{pg_url.rsplit(':', 1)[1].split('/')[0]}/", f":{relay.port}/")
    # plain TCP, so the relay can read the messages; a lock wait fails after 15 s, not never
    impl = PostgresStorage(url + "?sslmode=disable&options=-c%20lock_timeout%3D15s", retry_s=30)
    yield impl
    impl.close()


def _count(pg_url: str, sql: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])


def _study(store: PostgresStorage) -> int:
    exp = store.create_experiment("e", "builtin:x")
    return store.create_study(exp.id, "s", {"max_train_steps": 100}, seed=0).id


def test_a_commit_whose_answer_is_lost_is_not_written_twice(
    store: PostgresStorage, relay: CutAtCommit, pg_url: str
) -> None:
    sid = _study(store)
    relay.arm("after")
    added = store.add_trials(sid, [NewTrial({"i": 0}, 0), NewTrial({"i": 1}, 1)])
    assert relay.cuts == 1
    assert [t.number for t in added] == [0, 1]
    assert _count(pg_url, "SELECT count(*) FROM trials") == 2  # not 4

    trial = store.claim_trials("w", "cpu")[0]
    relay.arm("after")
    done = store.finish_trial(trial.id, TrialProgress(TrialState.COMPLETED, 5, 0.1, 10, 1.0),
                              lease=trial.lease_token)  # not "trial 1 is already COMPLETED"
    assert relay.cuts == 2
    assert done.state is TrialState.COMPLETED
    assert store.get_trial(trial.id).best_value == pytest.approx(0.1)


def test_a_commit_that_never_reached_the_server_runs_again(
    store: PostgresStorage, relay: CutAtCommit, pg_url: str
) -> None:
    sid = _study(store)
    relay.arm("before")
    added = store.add_trials(sid, [NewTrial({"i": 0}, 0)])
    assert relay.cuts == 1
    assert [t.number for t in added] == [0]
    assert _count(pg_url, "SELECT count(*) FROM trials") == 1  # not 0


def test_a_partition_at_commit_ends_the_servers_open_transaction_and_runs_again(
    store: PostgresStorage, relay: CutAtCommit, pg_url: str
) -> None:
    # the server still holds the first attempt open (and its lock on the study row): the store
    # ends that server process, which aborts it, instead of waiting on the lock for ever
    sid = _study(store)
    relay.arm("hold")
    start = time.monotonic()
    added = store.add_trials(sid, [NewTrial({"i": 0}, 0)])
    assert relay.cuts == 1
    assert [t.number for t in added] == [0]
    assert _count(pg_url, "SELECT count(*) FROM trials") == 1
    assert time.monotonic() - start < 20
