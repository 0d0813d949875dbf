"""The shared workspace store: :class:`PostgresStorage` implements ``Storage`` on PostgreSQL,
for engines on many hosts working one queue.

The schema is made or upgraded by :func:`init_db` (``tuneplay db init --store URL``); opening
a store only checks its version. Every method is one transaction. A lost connection (a server
restart, a network cut) is re-made and the whole transaction retried, with backoff, for up to
``RECONNECT_S`` seconds. Each process opens its own connection lazily (the object survives
``fork`` and pickling); threads of one process share it behind a lock.

Timestamps the store writes (``created_at``, ``started_at``, ``heartbeat_at``, ``finished_at``,
``lease_expires``) come from the server's clock, so hosts whose clocks disagree still agree on
which lease has expired. URLs in messages and ``repr`` never carry a password; libpq reads
one from ``~/.pgpass`` (or ``PGPASSFILE``) itself.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from engine.kinds import TrialKind
from engine.store.base import (
    DEFAULT_LEASE_SECONDS,
    Baseline,
    Checkpoint,
    Decision,
    Experiment,
    LeaseLost,
    MetricRow,
    NewTrial,
    StoreError,
    Study,
    Trial,
    TrialProgress,
    TrialState,
)
from engine.store.postgres_db import (
    CONNECT_TIMEOUT_S,
    COORDINATOR_LOCK,
    MIGRATIONS,
    RECONNECT_S,
    Coordinator,
    PgDatabase,
    init_db,
    redact_url,
)
from engine.store.rules import (
    check_meta_key,
    check_mode,
    check_verdict,
    progress_entry,
    to_json,
    trial_max_train_steps,
)
from engine.store.sqlite_db import disk_full
from engine.store.sqlite_rows import (
    BASELINE_COLS,
    DECISION_COLS,
    STUDY_COLS,
    baseline_from_row,
    checkpoint_from_row,
    decision_from_row,
    experiment_from_row,
    gc_paused,
    metric_rows,
    study_from_row,
)

__all__ = ["COORDINATOR_LOCK", "MIGRATIONS", "RECONNECT_S", "PostgresStorage", "init_db", "redact_url"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]

_COPY_ROWS = 5_000  # metric batches this big go through COPY
_NOW = "extract(epoch FROM clock_timestamp())::float8"  # the server's clock, epoch seconds
_CLOCK = f"(SELECT {_NOW} AS now) AS c"  # one reading per statement, as ``c.now``
_FINISHED = "('COMPLETED', 'FAILED', 'DIVERGED', 'CANCELLED')"
# A lease is held when the trial is RUNNING under exactly this (non-empty) token.
_HELD = "t.state = 'RUNNING' AND d.token <> '' AND t.lease_token = d.token"
_CLEAR_LEASE = "lease_token = '', lease_expires = NULL"

_TRIAL_FIELDS = (
    "id", "study_id", "number", "params", "seed", "state", "attempt", "point_index", "kind",
    "max_train_steps", "created_at", "started_at", "finished_at", "heartbeat_at", "device",
    "worker", "best_step", "best_value", "steps_done", "wall_time", "error", "group_key", "host",
    "lease_token", "lease_expires",
)
TRIAL_COLS = ", ".join(_TRIAL_FIELDS)
_T_COLS = ", ".join(f"t.{c}" for c in _TRIAL_FIELDS)


# --------------------------------------------------------------------------- rows


def _trial(r: Sequence[Any]) -> Trial:
    fields = dict(zip(_TRIAL_FIELDS, r))
    fields["params"], fields["state"] = json.loads(fields["params"]), TrialState(fields["state"])
    fields["kind"] = TrialKind(fields["kind"])
    return Trial(**fields)


def _ids(values: Iterable[Any]) -> list[int]:
    """Ids as plain ints (numpy integers are not adapted by psycopg)."""
    return [int(v) for v in values]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _progress(ids: Sequence[Any], steps_done: Mapping[Any, Any] | None) -> list[list[Any]]:
    """Heartbeat progress as columns: steps done, best step, best value (None: unchanged)."""
    entries = [progress_entry((steps_done or {}).get(i)) for i in ids]
    return [list(column) for column in zip(*entries)] if entries else [[], [], []]


def _lease_state(held: bool, state: str | None) -> TrialState | None:
    """What ``renew`` reports: RUNNING when held, a finished state (a user's cancel), else
    None (lost)."""
    if held:
        return TrialState.RUNNING
    if state is None or not TrialState(state).is_finished():
        return None
    return TrialState(state)


def _upsert_metrics(conn: Connection, rows: list[tuple[int, int, str, float]]) -> None:
    """Upsert distinct (trial, step, name) rows: one statement over four arrays, or for a big
    batch COPY into a temporary table first (a third faster at 1e5 rows than arrays)."""
    if not rows:
        return
    upsert = ("ON CONFLICT (trial_id, step, name) DO UPDATE SET value = excluded.value")
    if len(rows) < _COPY_ROWS:
        conn.execute(
            "INSERT INTO metrics (trial_id, step, name, value) SELECT * FROM unnest(%s::bigint[], "
            f"%s::bigint[], %s::text[], %s::float8[]) {upsert}",
            [list(column) for column in zip(*rows)], binary=True,
        )
        return
    conn.execute("CREATE TEMPORARY TABLE metrics_in (trial_id BIGINT, step BIGINT, "
                 "name TEXT, value DOUBLE PRECISION) ON COMMIT DROP")
    with conn.cursor() as cur:
        with cur.copy("COPY metrics_in FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "text", "float8"])
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO metrics SELECT * FROM metrics_in {upsert}")


# --------------------------------------------------------------------------- storage


class PostgresStorage:
    """A workspace in a PostgreSQL database, implementing ``Storage``; shared by many hosts.

    Safe to share between threads, to use after ``fork`` and to pickle (it reconnects).

    Args:
        url: ``postgresql://user@host:port/dbname`` (libpq options such as ``sslmode`` kept).
        checkpoints: the shared checkpoint folder; while its disk is full nothing is claimed.
        retry_s: how long a lost connection is retried before a StoreError.
        connect_timeout: seconds one connection attempt may take.
        connect: connect (and check the schema) now; False waits for the first use.

    Raises:
        StoreError: the server cannot be reached, or the database has no tuneplay schema or
            one of another version (``tuneplay db init --store URL`` makes or upgrades it).
    """

    def __init__(
        self, url: str, *, checkpoints: str | Path | None = None, retry_s: float = RECONNECT_S,
        connect_timeout: int = CONNECT_TIMEOUT_S, connect: bool = True,
    ) -> None:
        self._db = PgDatabase(url, retry_s=retry_s, connect_timeout=connect_timeout)
        self.url = self._db.display
        self.checkpoints = None if checkpoints is None else Path(checkpoints)
        self._run = self._db.run
        self._coordinator = Coordinator(self._db)
        if connect:  # a missing or old schema fails here, not at the first write
            self._run(lambda conn: None)

    def __repr__(self) -> str:
        return f"PostgresStorage({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"db": self._db, "checkpoints": self.checkpoints}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._db, self.checkpoints = state["db"], state["checkpoints"]
        self.url, self._run = self._db.display, self._db.run
        self._coordinator = Coordinator(self._db)

    def close(self) -> None:
        """Close this process's connections (giving up the coordinator lock); the store
        reconnects if used again."""
        self._coordinator.release()
        self._db.close()

    # ----------------------------------------------------------------- coordinator

    def try_coordinator(self) -> bool:
        """Become the one process that creates trials, if no other is (True), or stay it."""
        return self._coordinator.try_acquire()

    def is_coordinator(self) -> bool:
        """Whether this process still is the coordinator (after a lost session it tries once
        to win the lock back)."""
        return self._coordinator.holds()

    def release_coordinator(self) -> None:
        """Stop being the coordinator, so another process can take over."""
        self._coordinator.release()

    def db_time(self) -> float:
        """The server's clock, epoch seconds: the clock leases expire by."""
        return float(self._run(lambda conn: conn.execute(f"SELECT {_NOW}").fetchone()[0]))  # type: ignore[index]

    # ----------------------------------------------------------------- lookups

    def _one(self, conn: Connection, sql: str, args: Sequence[Any], what: str) -> Any:
        row = conn.execute(sql, args).fetchone()  # type: ignore[arg-type]
        if row is None:
            raise StoreError(f"{self.url}: no {what}")
        return row

    def _get_trial(self, conn: Connection, trial_id: int, lock: str = "") -> Trial:
        sql = f"SELECT {TRIAL_COLS} FROM trials WHERE id = %s {lock}"
        return _trial(self._one(conn, sql, (int(trial_id),), f"trial with id {trial_id}"))

    def _get_study(self, conn: Connection, study_id: int, lock: str = "") -> Study:
        sql = f"SELECT {STUDY_COLS} FROM studies WHERE id = %s {lock}"
        return study_from_row(self._one(conn, sql, (int(study_id),), f"study with id {study_id}"))

    def _get_experiment(self, conn: Connection, experiment_id: int, lock: str = "") -> Experiment:
        sql = f"SELECT id, name, workload, created_at FROM experiments WHERE id = %s {lock}"
        row = self._one(conn, sql, (int(experiment_id),), f"experiment with id {experiment_id}")
        return experiment_from_row(row)

    def _held(self, conn: Connection, leases: Mapping[Any, str], ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` hold their lease in ``leases``; locked until commit so no requeue
        can slip between this check and the write it guards."""
        wanted = sorted(set(ids))
        tokens = [str(leases.get(i) or "") for i in wanted]
        sql = (f"SELECT t.id FROM trials t JOIN unnest(%s::bigint[], %s::text[]) AS d(id, token) "
               f"ON t.id = d.id WHERE {_HELD} ORDER BY t.id FOR SHARE OF t")
        return {r[0] for r in conn.execute(sql, (wanted, tokens))}

    # ----------------------------------------------------------------- experiments

    def create_experiment(self, name: str, workload: str) -> Experiment:
        """Create an experiment; its name must be new."""
        sql = (f"INSERT INTO experiments (name, workload, created_at) VALUES (%s, %s, {_NOW}) "
               "ON CONFLICT (name) DO NOTHING RETURNING id, name, workload, created_at")
        def write(conn: Connection) -> Experiment:
            row = conn.execute(sql, (name, workload)).fetchone()
            if row is None:
                raise StoreError(f"{self.url}: an experiment named {name!r} already exists")
            return experiment_from_row(row)
        return self._run(write)

    def get_experiment(self, experiment_id: int) -> Experiment:
        """The experiment with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_experiment(conn, experiment_id))

    def find_experiment(self, name: str) -> Experiment | None:
        """The experiment with this name, or None."""
        sql = "SELECT id, name, workload, created_at FROM experiments WHERE name = %s"
        row = self._run(lambda conn: conn.execute(sql, (name,)).fetchone())
        return experiment_from_row(row) if row else None

    def list_experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""
        sql = "SELECT id, name, workload, created_at FROM experiments ORDER BY id"
        return [experiment_from_row(r) for r in self._run(lambda c: c.execute(sql).fetchall())]

    def add_baseline(
        self, experiment_id: int, config: Mapping[str, Any], metric: str, mode: str,
        max_train_steps: int, note: str = "",
    ) -> Baseline:
        """Launch the experiment's next baseline version (v1 first)."""
        check_mode(mode)
        sql = (
            "INSERT INTO baselines (experiment_id, version, config, metric, mode, max_train_steps, "
            "note, created_at) SELECT %s, COALESCE(MAX(version), 0) + 1, %s, %s, %s, %s, %s, "
            f"{_NOW} FROM baselines WHERE experiment_id = %s RETURNING {BASELINE_COLS}"
        )
        args = (int(experiment_id), to_json(config, "baseline config"), metric, mode,
                int(max_train_steps), note, int(experiment_id))
        def write(conn: Connection) -> Baseline:
            self._get_experiment(conn, experiment_id, "FOR UPDATE")  # versions count in turn
            return baseline_from_row(self._one(conn, sql, args, "baseline"))
        return self._run(write)

    def list_baselines(self, experiment_id: int) -> list[Baseline]:
        """The experiment's baselines by version."""
        sql = f"SELECT {BASELINE_COLS} FROM baselines WHERE experiment_id = %s ORDER BY version"
        rows = self._run(lambda conn: conn.execute(sql, (int(experiment_id),)).fetchall())
        return [baseline_from_row(r) for r in rows]

    # ----------------------------------------------------------------- studies

    def create_study(
        self, experiment_id: int, name: str, spec: Mapping[str, Any], seed: int,
        source_path: str = "",
    ) -> Study:
        """Create a study; study names are unique across the workspace."""
        stored = to_json(spec, "study spec")
        sql = ("INSERT INTO studies (experiment_id, name, spec, seed, next_index, created_at, "
               f"source_path) VALUES (%s, %s, %s, %s, 0, {_NOW}, %s) ON CONFLICT (name) DO NOTHING "
               f"RETURNING {STUDY_COLS}")
        def write(conn: Connection) -> Study:
            self._get_experiment(conn, experiment_id)
            row = conn.execute(sql, (int(experiment_id), name, stored, int(seed), source_path))
            found = row.fetchone()
            if found is None:
                raise StoreError(f"{self.url}: a study named {name!r} already exists")
            return study_from_row(found)
        return self._run(write)

    def get_study(self, study_id: int) -> Study:
        """The study with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_study(conn, study_id))

    def find_study(self, name: str) -> Study | None:
        """The study with this name, or None."""
        sql = f"SELECT {STUDY_COLS} FROM studies WHERE name = %s"
        row = self._run(lambda conn: conn.execute(sql, (name,)).fetchone())
        return study_from_row(row) if row else None

    def list_studies(self, experiment_id: int | None = None) -> list[Study]:
        """Studies (of one experiment, or all), oldest first."""
        sql, args = f"SELECT {STUDY_COLS} FROM studies", ()  # type: str, tuple[int, ...]
        if experiment_id is not None:
            sql, args = sql + " WHERE experiment_id = %s", (int(experiment_id),)
        rows = self._run(lambda conn: conn.execute(sql + " ORDER BY id", args).fetchall())
        return [study_from_row(r) for r in rows]

    def update_study_spec(self, study_id: int, spec: Mapping[str, Any]) -> Study:
        """Replace the study's stored spec (e.g. a raised budget)."""
        sql = f"UPDATE studies SET spec = %s WHERE id = %s RETURNING {STUDY_COLS}"
        stored = to_json(spec, "study spec")
        return self._run(lambda conn: study_from_row(
            self._one(conn, sql, (stored, int(study_id)), f"study with id {study_id}")
        ))

    def reserve_points(self, study_id: int, n: int) -> int:
        """Atomically advance ``next_index`` by ``n``; return the first reserved index."""
        if n < 0:
            raise StoreError(f"reserve_points: n must be >= 0, got {n}")
        sql = "UPDATE studies SET next_index = next_index + %s WHERE id = %s RETURNING next_index"
        row = self._run(lambda conn: self._one(conn, sql, (int(n), int(study_id)),
                                               f"study with id {study_id}"))
        return int(row[0]) - int(n)

    # ----------------------------------------------------------------- trials

    def _insert_trials(
        self, conn: Connection, study_id: int, trials: Sequence[NewTrial], worker: str | None,
    ) -> list[Trial]:
        """Insert trials numbered on from the study's last (QUEUED; RUNNING for ``worker``)."""
        study = self._get_study(conn, study_id, "FOR UPDATE")  # numbers are handed out in turn
        columns = [
            [to_json(t.params, "trial params") for t in trials], [int(t.seed) for t in trials],
            [int(t.point_index) for t in trials], [t.kind for t in trials],
            [trial_max_train_steps(study, t) for t in trials], [t.group_key for t in trials],
        ]
        if not trials:
            return []
        (first,) = conn.execute(  # type: ignore[misc]
            "SELECT COALESCE(MAX(number), -1) + 1 FROM trials WHERE study_id = %s", (study.id,)
        ).fetchone()
        state, attempt, started = ("QUEUED", 0, "NULL") if worker is None else ("RUNNING", 1, "c.now")
        conn.execute(
            "INSERT INTO trials (study_id, number, params, seed, state, attempt, point_index, "
            "kind, max_train_steps, created_at, started_at, heartbeat_at, worker, group_key) "
            f"SELECT %s, %s + d.n - 1, d.p, d.s, %s, %s, d.pi, d.k, d.m, c.now, {started}, "
            f"{started}, %s, d.g FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], "
            f"%s::bigint[], %s::text[]) WITH ORDINALITY AS d(p, s, pi, k, m, g, n), {_CLOCK} "
            "ORDER BY d.n",
            (study.id, first, state, attempt, worker or "", *columns),
        )
        sql = f"SELECT {TRIAL_COLS} FROM trials WHERE study_id = %s AND number >= %s ORDER BY id"
        return [_trial(r) for r in conn.execute(sql, (study.id, first))]

    def add_trials(self, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        """Enqueue trials; each gets the next 0-based number within its study."""
        return self._run(lambda conn: self._insert_trials(conn, study_id, trials, None))

    def add_running(self, study_id: int, trials: Sequence[NewTrial], worker: str) -> list[Trial]:
        """Create trials already RUNNING (attempt 1) for ``worker`` (ask/tell): no lease, so
        they never expire and no engine claims them."""
        return self._run(lambda conn: self._insert_trials(conn, study_id, trials, worker))

    def get_trial(self, trial_id: int) -> Trial:
        """The trial with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_trial(conn, trial_id))

    def list_trials(
        self, study_id: int | None = None, states: Iterable[TrialState] | None = None
    ) -> list[Trial]:
        """Trials filtered by study and state, in insertion order."""
        clauses, args = ["TRUE"], []  # type: list[str], list[Any]
        if study_id is not None:
            clauses.append("study_id = %s")
            args.append(int(study_id))
        if states is not None:
            clauses.append("state = ANY(%s::text[])")
            args.append([TrialState(s).value for s in states])
        sql = f"SELECT {TRIAL_COLS} FROM trials WHERE {' AND '.join(clauses)} ORDER BY id"
        return [_trial(r) for r in self._run(lambda conn: conn.execute(sql, args).fetchall())]

    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False, *, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (oldest first) to RUNNING, each under
        a new lease expiring ``lease_seconds`` from now by the server's clock.

        Rows another claimer has locked are skipped (``FOR UPDATE SKIP LOCKED``), so many
        processes claim at once without waiting on each other or sharing a trial. Claims
        nothing while the checkpoint folder's disk is full (see ``sqlite_db.disk_full``).
        """
        if self.checkpoints is not None and disk_full(self.checkpoints):
            return []
        where, args = "t.state = 'QUEUED'", []  # type: str, list[Any]
        if study_id is not None:
            where, args = where + " AND t.study_id = %s", [int(study_id)]
        if group:  # the oldest queued trial, then up to limit - 1 of its non-empty group key
            picked = (
                f"first AS (SELECT t.id, t.group_key FROM trials t WHERE {where} ORDER BY t.id "
                "LIMIT 1 FOR UPDATE SKIP LOCKED), mates AS (SELECT t.id FROM trials t, first f "
                f"WHERE {where} AND f.group_key <> '' AND t.group_key = f.group_key AND t.id > f.id "
                "ORDER BY t.id LIMIT %s FOR UPDATE OF t SKIP LOCKED), "
                "picked AS (SELECT id FROM first UNION ALL SELECT id FROM mates)"
            )
            args = [*args, *args, max(0, limit - 1)]
        else:
            picked = (f"picked AS (SELECT t.id FROM trials t WHERE {where} ORDER BY t.id "
                      "LIMIT %s FOR UPDATE SKIP LOCKED)")
            args = [*args, max(0, limit)]
        # One statement: pick (skipping rows other claimers hold) and claim, each trial with
        # its own token (one per possible row, generated here: secrets, not the server's RNG).
        sql = (
            f"WITH {picked}, n AS (SELECT id, row_number() OVER (ORDER BY id) AS i FROM picked) "
            "UPDATE trials t SET state = 'RUNNING', attempt = t.attempt + 1, worker = %s, "
            "device = %s, host = %s, started_at = c.now, heartbeat_at = c.now, finished_at = NULL, "
            "lease_token = (%s::text[])[n.i], lease_expires = c.now + %s "
            f"FROM n, {_CLOCK} WHERE t.id = n.id RETURNING {_T_COLS}"
        )
        def write(conn: Connection) -> list[Trial]:  # fresh tokens for every attempt
            tokens = [secrets.token_hex(16) for _ in range(max(1, limit))]
            claim = (*args, worker, device, host, tokens, float(lease_seconds))
            return sorted((_trial(r) for r in conn.execute(sql, claim)), key=lambda t: t.id)
        return self._run(write)

    def next_queued_group_key(self) -> str | None:
        """The group key of the oldest QUEUED trial (None when nothing is queued)."""
        sql = "SELECT group_key FROM trials WHERE state = 'QUEUED' ORDER BY id LIMIT 1"
        row = self._run(lambda conn: conn.execute(sql).fetchone())
        return None if row is None else str(row[0])

    def has_queued(self) -> bool:
        """Whether any trial waits to be claimed."""
        sql = "SELECT EXISTS (SELECT 1 FROM trials WHERE state = 'QUEUED')"
        return bool(self._run(lambda conn: conn.execute(sql).fetchone()[0]))  # type: ignore[index]

    def heartbeat(
        self, trial_ids: Sequence[int], steps_done: Mapping[int, Any] | None = None
    ) -> dict[int, TrialState]:
        """Mark RUNNING trials alive and record progress; return every given trial's state.

        ``steps_done`` maps a trial id to its steps done, or to ``(steps_done, best_step,
        best_value)`` so viewers see the best-so-far of a running trial.
        """
        ids = _ids(trial_ids)
        steps, best_step, best_value = _progress(list(trial_ids), steps_done)
        sql = (
            "UPDATE trials t SET heartbeat_at = c.now, steps_done = COALESCE(d.s, t.steps_done), "
            "best_step = COALESCE(d.bs, t.best_step), best_value = COALESCE(d.bv, t.best_value) "
            f"FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[]) AS d(id, s, bs, bv), "
            f"{_CLOCK} WHERE t.id = d.id AND t.state = 'RUNNING'"
        )
        def write(conn: Connection) -> dict[int, TrialState]:
            conn.execute(sql, (ids, steps, best_step, best_value))
            rows = conn.execute("SELECT id, state FROM trials WHERE id = ANY(%s::bigint[])", (ids,))
            return {int(i): TrialState(st) for i, st in rows}
        return self._run(write)

    def renew(
        self, leases: Mapping[int, str], steps_done: Mapping[int, Any] | None = None, *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> dict[int, TrialState | None]:
        """Renew held leases (``lease_expires = db_time() + lease_seconds``), marking the trials
        alive and recording progress as ``heartbeat`` does.

        Returns, per given trial: RUNNING while its lease is held; its state when it has
        finished (a user's cancel); None when the lease is lost (requeued, paused, claimed
        again, or gone). Trials not held are not touched.
        """
        keys = list(leases)
        ids, tokens = _ids(keys), [str(leases[k] or "") for k in keys]
        steps, best_step, best_value = _progress(keys, steps_done)
        sql = (
            "UPDATE trials t SET heartbeat_at = c.now, lease_expires = c.now + %s, "
            "steps_done = COALESCE(d.s, t.steps_done), best_step = COALESCE(d.bs, t.best_step), "
            "best_value = COALESCE(d.bv, t.best_value) FROM unnest(%s::bigint[], %s::text[], "
            "%s::bigint[], %s::bigint[], %s::float8[]) AS d(id, token, s, bs, bv), "
            f"{_CLOCK} WHERE t.id = d.id AND {_HELD} RETURNING t.id"
        )
        def write(conn: Connection) -> dict[int, TrialState | None]:
            args = (float(lease_seconds), ids, tokens, steps, best_step, best_value)
            held = {r[0] for r in conn.execute(sql, args)}
            states = dict(conn.execute(
                "SELECT id, state FROM trials WHERE id = ANY(%s::bigint[])", (ids,)).fetchall())
            return {i: _lease_state(i in held, states.get(i)) for i in ids}
        return self._run(write) if ids else {}

    def expired_leases(self) -> list[Trial]:
        """RUNNING trials whose lease expired by the server's clock (trials without a lease,
        such as asked ones, never expire)."""
        sql = (f"SELECT {TRIAL_COLS} FROM trials WHERE state = 'RUNNING' "
               f"AND lease_expires < {_NOW} ORDER BY id")
        return [_trial(r) for r in self._run(lambda conn: conn.execute(sql).fetchall())]

    def finish_trial(
        self, trial_id: int, progress: TrialProgress, *, lease: str | None = None
    ) -> Trial:
        """Record the end of an attempt; a trial already finished is refused, and with
        ``lease`` one whose lease is not held (LeaseLost, nothing written)."""
        state = TrialState(progress.state)
        if state in (TrialState.QUEUED, TrialState.RUNNING):
            raise StoreError(f"finish_trial {trial_id}: {state.value} is not an end state")
        finished_at = _NOW if state.is_finished() else "NULL"
        sql = (
            "UPDATE trials SET state = %s, best_step = %s, best_value = %s, steps_done = %s, "
            f"wall_time = %s, error = %s, finished_at = {finished_at}, {_CLEAR_LEASE} "
            f"WHERE id = %s RETURNING {TRIAL_COLS}"
        )
        def write(conn: Connection) -> Trial:
            current = self._get_trial(conn, trial_id, "FOR UPDATE")
            if current.state.is_finished():
                raise StoreError(f"{self.url}: trial {trial_id} is already {current.state.value}")
            if lease is not None and not (
                current.state is TrialState.RUNNING and lease and current.lease_token == lease
            ):
                raise LeaseLost(f"{self.url}: trial {trial_id}: lease lost; its end is not recorded")
            return _trial(self._one(conn, sql, (
                state.value, _opt_int(progress.best_step), _opt_float(progress.best_value),
                int(progress.steps_done), float(progress.wall_time), progress.error, int(trial_id),
            ), f"trial with id {trial_id}"))
        return self._run(write)

    def finish_trials(
        self, items: Sequence[tuple[int, TrialProgress]], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Record the end of many attempts in one transaction; finished trials are skipped,
        and with ``leases`` so are those whose lease is not held. Returns the ids recorded."""
        first: dict[int, TrialProgress] = {}
        for trial_id, progress in items:
            if not TrialState(progress.state).is_finished():
                raise StoreError(f"finish_trials {trial_id}: {progress.state} is not an end state")
            first.setdefault(int(trial_id), progress)  # a repeated id: the first end stands
        if not first:
            return []
        ids, ends = list(first), list(first.values())
        columns = [
            ids, [TrialState(p.state).value for p in ends], [_opt_int(p.best_step) for p in ends],
            [_opt_float(p.best_value) for p in ends], [int(p.steps_done) for p in ends],
            [float(p.wall_time) for p in ends], [p.error for p in ends],
            [str((leases or {}).get(i) or "") for i in ids],
        ]
        fence = f"AND {_HELD}" if leases is not None else ""
        sql = (
            "UPDATE trials t SET state = d.state, best_step = d.bs, best_value = d.bv, "
            "steps_done = d.s, wall_time = d.w, error = d.e, finished_at = c.now, "
            f"{_CLEAR_LEASE} FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::float8[], "
            "%s::bigint[], %s::float8[], %s::text[], %s::text[]) AS d(id, state, bs, bv, s, w, e, "
            f"token), {_CLOCK} WHERE t.id = d.id AND t.state NOT IN {_FINISHED} {fence} "
            "RETURNING t.id"
        )
        done = {r[0] for r in self._run(lambda conn: conn.execute(sql, columns).fetchall())}
        return [i for i in ids if i in done]

    def set_state(
        self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState],
        leases: Mapping[int, str] | None = None,
    ) -> int:
        """Move trials to ``state`` if they are currently in one of ``only_from`` (and, with
        ``leases``, only those whose lease is held); return how many. A trial leaving
        RUNNING loses its lease."""
        state = TrialState(state)
        sources = [TrialState(s).value for s in only_from]
        ids = list(dict.fromkeys(_ids(trial_ids)))
        tokens = [str((leases or {}).get(i) or "") for i in ids]
        finished_at = _NOW if state.is_finished() else "NULL"
        clear = "" if state is TrialState.RUNNING else f", {_CLEAR_LEASE}"
        fence = f"AND {_HELD}" if leases is not None else ""
        sql = (
            f"UPDATE trials t SET state = %s, finished_at = {finished_at}{clear} "
            "FROM unnest(%s::bigint[], %s::text[]) AS d(id, token) "
            f"WHERE t.id = d.id AND t.state = ANY(%s::text[]) {fence}"
        )
        args = (state.value, ids, tokens, sources)
        return self._run(lambda conn: conn.execute(sql, args).rowcount) if ids else 0

    def requeue_stale(self, older_than: float) -> list[Trial]:
        """RUNNING trials whose heartbeat (or start) is older than ``older_than`` -> QUEUED,
        their leases cleared."""
        sql = (
            f"UPDATE trials t SET state = 'QUEUED', {_CLEAR_LEASE} WHERE state = 'RUNNING' "
            f"AND COALESCE(heartbeat_at, started_at, 0) < %s RETURNING {_T_COLS}"
        )
        rows = self._run(lambda conn: conn.execute(sql, (float(older_than),)).fetchall())
        return sorted((_trial(r) for r in rows), key=lambda t: t.id)

    # ----------------------------------------------------------------- metrics, checkpoints

    def write_metrics(
        self, rows: Sequence[MetricRow], *, leases: Mapping[int, str] | None = None
    ) -> list[int]:
        """Upsert: exactly one row per (trial, step, name); a re-reported step replaces it.

        One statement over four arrays, whatever the number of rows. With ``leases``, rows of
        trials whose lease is not held are dropped; returns those trials' ids (sorted).
        """
        latest: dict[tuple[int, int, str], float] = {}
        for r in rows:  # a key repeated within one batch: the last value stands
            latest[(int(r.trial_id), int(r.step), str(r.name))] = float(r.value)
        if not latest:
            return []
        def write(conn: Connection) -> list[int]:
            owners = {k[0] for k in latest}
            held = owners if leases is None else self._held(conn, leases, owners)
            if held == owners:
                _upsert_metrics(conn, [(*k, v) for k, v in latest.items()])
            else:
                _upsert_metrics(conn, [(*k, v) for k, v in latest.items() if k[0] in held])
            return sorted(owners - held)
        return self._run(write)

    def _metrics_query(
        self, trial_ids: Sequence[int] | None, study_id: int | None,
        names: Sequence[str] | None, since_step: int | None,
    ) -> tuple[str, list[Any]]:
        clauses, args = ["TRUE"], []  # type: list[str], list[Any]
        if trial_ids is not None:
            clauses.append("trial_id = ANY(%s::bigint[])")
            args.append(_ids(trial_ids))
        if study_id is not None:
            clauses.append("trial_id IN (SELECT id FROM trials WHERE study_id = %s)")
            args.append(int(study_id))
        if names is not None:
            clauses.append("name = ANY(%s::text[])")
            args.append([str(n) for n in names])
        if since_step is not None:
            clauses.append("step >= %s")
            args.append(int(since_step))
        # The order is the primary key's (name in byte order, as SQLite's).
        sql = (f"SELECT trial_id, step, name, value FROM metrics WHERE {' AND '.join(clauses)} "
               "ORDER BY trial_id, step, name")
        return sql, args

    def _fetch_metrics(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        def read(conn: Connection) -> list[tuple[Any, ...]]:
            with conn.cursor(binary=True) as cur:  # binary rows parse ~2x faster than text
                return cur.execute(sql, args).fetchall()
        return self._run(read)

    def read_metrics(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]:
        """Metric rows (steps >= ``since_step`` when given) ordered by trial, step, name."""
        sql, args = self._metrics_query(trial_ids, study_id, names, since_step)
        with gc_paused():
            return metric_rows(self._fetch_metrics(sql, args))

    def read_metrics_columns(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> dict[str, list[Any]]:
        """As :meth:`read_metrics`, but columns ``trial_id, step, name, value`` (DataFrames)."""
        sql, args = self._metrics_query(trial_ids, study_id, names, since_step)
        with gc_paused():
            rows = self._fetch_metrics(sql, args)
            if not rows:
                return {"trial_id": [], "step": [], "name": [], "value": []}
            trial, step, name, value = (list(c) for c in zip(*rows))
        return {"trial_id": trial, "step": step, "name": name, "value": value}

    def record_checkpoint(self, checkpoint: Checkpoint, *, lease: str | None = None) -> None:
        """Upsert the trial's checkpoint of this kind (LeaseLost, nothing written, when
        ``lease`` is given and not held)."""
        if lease is None:
            self.record_checkpoints([checkpoint])
        elif self.record_checkpoints([checkpoint], leases={checkpoint.trial_id: lease}):
            raise LeaseLost(f"{self.url}: trial {checkpoint.trial_id}: lease lost; "
                            f"its {checkpoint.kind} checkpoint is not recorded")

    def record_checkpoints(
        self, checkpoints: Sequence[Checkpoint], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert several checkpoints in one transaction (a fused group's); with ``leases``,
        those of trials whose lease is not held are dropped. Returns the refused trial ids."""
        latest = {(int(c.trial_id), c.kind): c for c in checkpoints}
        if not latest:
            return []
        sql = (
            "INSERT INTO checkpoints (trial_id, kind, step, path, value, created_at) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], "
            "%s::float8[], %s::float8[]) ON CONFLICT (trial_id, kind) DO UPDATE SET "
            "step = excluded.step, path = excluded.path, value = excluded.value, "
            "created_at = excluded.created_at"
        )
        def write(conn: Connection) -> list[int]:
            owners = {k[0] for k in latest}
            held = owners if leases is None else self._held(conn, leases, owners)
            keep = [c for (t, _), c in latest.items() if t in held]
            if keep:
                conn.execute(sql, (
                    [int(c.trial_id) for c in keep], [c.kind for c in keep],
                    [int(c.step) for c in keep], [c.path for c in keep],
                    [_opt_float(c.value) for c in keep], [float(c.created_at) for c in keep],
                ))
            return sorted(owners - held)
        return self._run(write)

    def get_checkpoints(self, trial_id: int) -> list[Checkpoint]:
        """The trial's checkpoints, by kind."""
        sql = ("SELECT trial_id, kind, step, path, value, created_at FROM checkpoints "
               "WHERE trial_id = %s ORDER BY kind")
        rows = self._run(lambda conn: conn.execute(sql, (int(trial_id),)).fetchall())
        return [checkpoint_from_row(r) for r in rows]

    # ----------------------------------------------------------------- decisions, meta

    def record_decision(
        self, experiment_id: int, study_id: int | None, verdict: str,
        candidate: Mapping[str, Any], baseline_version: int, test: str,
        stats: Mapping[str, Any], rationale: str, complexity_note: str,
    ) -> Decision:
        """Append a decision to the experiment's log."""
        check_verdict(verdict)
        args = (int(experiment_id), _opt_int(study_id), verdict,
                to_json(candidate, "decision candidate"), int(baseline_version), test,
                to_json(stats, "decision stats"), rationale, complexity_note)
        sql = (
            "INSERT INTO decisions (experiment_id, study_id, verdict, candidate, "
            "baseline_version, test, stats, rationale, complexity_note, created_at) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}) RETURNING {DECISION_COLS}"
        )
        def write(conn: Connection) -> Decision:
            self._get_experiment(conn, experiment_id)
            return decision_from_row(self._one(conn, sql, args, "decision"))
        return self._run(write)

    def list_decisions(self, experiment_id: int | None = None) -> list[Decision]:
        """Decisions (of one experiment, or all), oldest first."""
        sql, args = f"SELECT {DECISION_COLS} FROM decisions", ()  # type: str, tuple[int, ...]
        if experiment_id is not None:
            sql, args = sql + " WHERE experiment_id = %s", (int(experiment_id),)
        rows = self._run(lambda conn: conn.execute(sql + " ORDER BY id", args).fetchall())
        return [decision_from_row(r) for r in rows]

    def set_meta(self, key: str, value: str) -> None:
        """Set an engine bookkeeping value (``schema_version`` is not settable)."""
        check_meta_key(key)
        sql = ("INSERT INTO meta (key, value) VALUES (%s, %s) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        self._run(lambda conn: conn.execute(sql, (key, str(value))))

    def get_meta(self, key: str) -> str | None:
        """An engine bookkeeping value, or None."""
        sql = "SELECT value FROM meta WHERE key = %s"
        row = self._run(lambda conn: conn.execute(sql, (key,)).fetchone())
        return row[0] if row else None

    def list_meta(self, prefix: str) -> dict[str, str]:
        """Every meta key starting with ``prefix`` (e.g. ``engine.host.``) and its value."""
        sql = "SELECT key, value FROM meta WHERE starts_with(key, %s) ORDER BY key"
        return dict(self._run(lambda conn: conn.execute(sql, (prefix,)).fetchall()))

    def delete_meta(self, key: str) -> None:
        """Forget an engine bookkeeping value (``schema_version`` stays)."""
        check_meta_key(key)
        self._run(lambda conn: conn.execute("DELETE FROM meta WHERE key = %s", (key,)))
