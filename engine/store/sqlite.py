"""The embedded workspace store: :class:`SQLiteStorage` implements ``Storage`` on SQLite.

Connections, transactions, retries and the schema live in :mod:`engine.store.sqlite_db`;
this module maps the protocol onto SQL. Every method is one transaction, so each is atomic
across the engine, the CLI and any number of viewers.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
from engine.store.rules import (
    check_meta_key,
    check_mode,
    check_verdict,
    progress_entry,
    to_json,
    trial_max_train_steps,
)
from engine.store.sqlite_db import BUSY_TIMEOUT_S, Connection, Database, DiskFullError, disk_full
from engine.store.sqlite_rows import (
    BASELINE_COLS,
    DECISION_COLS,
    STUDY_COLS,
    TRIAL_COLS,
    baseline_from_row,
    checkpoint_from_row,
    decision_from_row,
    encode_float,
    experiment_from_row,
    gc_paused,
    metric_rows,
    study_from_row,
    trial_from_row,
)

# --------------------------------------------------------------------------- helpers


def _ids_json(ids: Iterable[Any]) -> str:
    """Ids as a JSON array (accepting numpy integers, which neither json nor sqlite3 take)."""
    return json.dumps([int(i) for i in ids])


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _in_list(column: str) -> str:
    """A filter on ``column`` by a JSON array parameter (no limit on the number of values)."""
    return f"{column} IN (SELECT value FROM json_each(?))"


# A trial leaving RUNNING gives its lease up: no late write under the old token can land.
_NO_LEASE = "lease_token = '', lease_expires = NULL"


def _held(conn: Connection, leases: Mapping[int, str] | None, ids: Iterable[int]) -> set[int] | None:
    """Of ``ids``, those whose lease ``leases`` names is held (None: no fencing asked)."""
    if leases is None:
        return None
    wanted = {int(i) for i in ids}
    rows = conn.execute(
        f"SELECT id, lease_token FROM trials WHERE state = 'RUNNING' AND {_in_list('id')}",
        (_ids_json(wanted),),
    )
    return {int(i) for i, token in rows if token and leases.get(int(i)) == token}


# --------------------------------------------------------------------------- storage


class SQLiteStorage:
    """The workspace database (``.tuneplay/tuneplay.db``), implementing ``Storage``.

    Safe to share between threads, to use after ``fork`` and to pickle (it reconnects).

    Args:
        path: the database file; created owner-only with the schema when missing.
        busy_timeout: seconds SQLite waits for a lock before the retry loop backs off.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self._db = Database(path, busy_timeout=busy_timeout)
        self.path = self._db.path
        self._run = self._db.run

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"db": self._db}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._db = state["db"]
        self.path = self._db.path
        self._run = self._db.run

    def close(self) -> None:
        """Close this process's connection; the store reconnects if used again."""
        self._db.close()

    # ----------------------------------------------------------------- lookups

    def _one(self, conn: Connection, sql: str, args: Sequence[Any], what: str) -> Any:
        row = conn.execute(sql, args).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no {what}")
        return row

    def _get_trial(self, conn: Connection, trial_id: int) -> Trial:
        sql = f"SELECT {TRIAL_COLS} FROM trials WHERE id = ?"
        return trial_from_row(self._one(conn, sql, (trial_id,), f"trial with id {trial_id}"))

    def _get_study(self, conn: Connection, study_id: int) -> Study:
        sql = f"SELECT {STUDY_COLS} FROM studies WHERE id = ?"
        return study_from_row(self._one(conn, sql, (study_id,), f"study with id {study_id}"))

    def _get_experiment(self, conn: Connection, experiment_id: int) -> Experiment:
        sql = "SELECT id, name, workload, created_at FROM experiments WHERE id = ?"
        return experiment_from_row(
            self._one(conn, sql, (experiment_id,), f"experiment with id {experiment_id}")
        )

    def _trials_by_ids(self, conn: Connection, ids: Sequence[int]) -> list[Trial]:
        sql = f"SELECT {TRIAL_COLS} FROM trials WHERE {_in_list('id')} ORDER BY id"
        return [trial_from_row(r) for r in conn.execute(sql, (_ids_json(ids),))]

    # ----------------------------------------------------------------- experiments

    def create_experiment(self, name: str, workload: str) -> Experiment:
        """Create an experiment; its name must be new."""
        def write(conn: Connection) -> Experiment:
            if conn.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"{self.path}: an experiment named {name!r} already exists")
            cur = conn.execute(
                "INSERT INTO experiments (name, workload, created_at) VALUES (?, ?, ?)",
                (name, workload, time.time()),
            )
            return self._get_experiment(conn, cur.lastrowid or 0)
        return self._run(write, write=True)

    def get_experiment(self, experiment_id: int) -> Experiment:
        """The experiment with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_experiment(conn, experiment_id))

    def find_experiment(self, name: str) -> Experiment | None:
        """The experiment with this name, or None."""
        sql = "SELECT id, name, workload, created_at FROM experiments WHERE name = ?"
        row = self._run(lambda conn: conn.execute(sql, (name,)).fetchone())
        return experiment_from_row(row) if row else None

    def list_experiments(self) -> list[Experiment]:
        """All experiments, oldest first."""
        sql = "SELECT id, name, workload, created_at FROM experiments ORDER BY id"
        rows = self._run(lambda conn: conn.execute(sql).fetchall())
        return [experiment_from_row(r) for r in rows]

    def add_baseline(
        self, experiment_id: int, config: Mapping[str, Any], metric: str, mode: str,
        max_train_steps: int, note: str = "",
    ) -> Baseline:
        """Launch the experiment's next baseline version (v1 first)."""
        check_mode(mode)
        def write(conn: Connection) -> Baseline:
            self._get_experiment(conn, experiment_id)
            (version,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM baselines WHERE experiment_id = ?",
                (experiment_id,),
            ).fetchone()
            cur = conn.execute(
                f"INSERT INTO baselines ({BASELINE_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (experiment_id, version, to_json(config, "baseline config"), metric, mode,
                 int(max_train_steps), note, time.time()),
            )
            sql = f"SELECT {BASELINE_COLS} FROM baselines WHERE id = ?"
            return baseline_from_row(conn.execute(sql, (cur.lastrowid,)).fetchone())
        return self._run(write, write=True)

    def list_baselines(self, experiment_id: int) -> list[Baseline]:
        """The experiment's baselines by version."""
        sql = f"SELECT {BASELINE_COLS} FROM baselines WHERE experiment_id = ? ORDER BY version"
        rows = self._run(lambda conn: conn.execute(sql, (experiment_id,)).fetchall())
        return [baseline_from_row(r) for r in rows]

    # ----------------------------------------------------------------- studies

    def create_study(
        self, experiment_id: int, name: str, spec: Mapping[str, Any], seed: int,
        source_path: str = "",
    ) -> Study:
        """Create a study; study names are unique across the workspace."""
        def write(conn: Connection) -> Study:
            self._get_experiment(conn, experiment_id)
            if conn.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"{self.path}: a study named {name!r} already exists")
            cur = conn.execute(
                f"INSERT INTO studies ({STUDY_COLS}) VALUES (NULL, ?, ?, ?, ?, 0, ?, ?)",
                (experiment_id, name, to_json(spec, "study spec"), int(seed), time.time(),
                 source_path),
            )
            return self._get_study(conn, cur.lastrowid or 0)
        return self._run(write, write=True)

    def get_study(self, study_id: int) -> Study:
        """The study with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_study(conn, study_id))

    def find_study(self, name: str) -> Study | None:
        """The study with this name, or None."""
        sql = f"SELECT {STUDY_COLS} FROM studies WHERE name = ?"
        row = self._run(lambda conn: conn.execute(sql, (name,)).fetchone())
        return study_from_row(row) if row else None

    def list_studies(self, experiment_id: int | None = None) -> list[Study]:
        """Studies (of one experiment, or all), oldest first."""
        sql, args = f"SELECT {STUDY_COLS} FROM studies", ()  # type: str, tuple[int, ...]
        if experiment_id is not None:
            sql, args = sql + " WHERE experiment_id = ?", (experiment_id,)
        rows = self._run(lambda conn: conn.execute(sql + " ORDER BY id", args).fetchall())
        return [study_from_row(r) for r in rows]

    def update_study_spec(self, study_id: int, spec: Mapping[str, Any]) -> Study:
        """Replace the study's stored spec (e.g. a raised budget)."""
        def write(conn: Connection) -> Study:
            self._get_study(conn, study_id)
            conn.execute(
                "UPDATE studies SET spec = ? WHERE id = ?", (to_json(spec, "study spec"), study_id)
            )
            return self._get_study(conn, study_id)
        return self._run(write, write=True)

    def reserve_points(self, study_id: int, n: int) -> int:
        """Atomically advance ``next_index`` by ``n``; return the first reserved index."""
        if n < 0:
            raise StoreError(f"reserve_points: n must be >= 0, got {n}")
        def write(conn: Connection) -> int:
            first = self._get_study(conn, study_id).next_index
            conn.execute(
                "UPDATE studies SET next_index = next_index + ? WHERE id = ?", (n, study_id)
            )
            return first
        return self._run(write, write=True)

    # ----------------------------------------------------------------- trials

    def add_trials(self, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        """Enqueue trials; each gets the next 0-based number within its study."""
        return self._run(lambda conn: self._add(conn, study_id, trials), write=True)

    def _add(self, conn: Connection, study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        """Insert ``trials`` QUEUED, numbered on from the study's last (in ``conn``'s transaction)."""
        study = self._get_study(conn, study_id)
        (number,) = conn.execute(
            "SELECT COALESCE(MAX(number), -1) + 1 FROM trials WHERE study_id = ?",
            (study_id,),
        ).fetchone()
        ids, now = [], time.time()
        for offset, new in enumerate(trials):
            cur = conn.execute(
                "INSERT INTO trials (study_id, number, params, seed, state, point_index, "
                "kind, max_train_steps, created_at, group_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (study_id, number + offset, to_json(new.params, "trial params"), int(new.seed),
                 TrialState.QUEUED.value, new.point_index, new.kind,
                 trial_max_train_steps(study, new), now, new.group_key),
            )
            ids.append(cur.lastrowid or 0)
        return self._trials_by_ids(conn, ids)

    def add_running(self, study_id: int, trials: Sequence[NewTrial], worker: str) -> list[Trial]:
        """Create trials already RUNNING for ``worker`` outside any engine (ask/tell); they hold
        no lease, so no engine claims them and they never expire."""
        def write(conn: Connection) -> list[Trial]:
            added = self._add(conn, study_id, trials)
            now = time.time()
            conn.execute(
                "UPDATE trials SET state = 'RUNNING', attempt = 1, worker = ?, started_at = ?, "
                f"heartbeat_at = ? WHERE {_in_list('id')}", (worker, now, now, _ids_json(t.id for t in added)))
            return self._trials_by_ids(conn, [t.id for t in added])
        return self._run(write, write=True)

    def get_trial(self, trial_id: int) -> Trial:
        """The trial with this id (StoreError when there is none)."""
        return self._run(lambda conn: self._get_trial(conn, trial_id))

    def list_trials(
        self, study_id: int | None = None, states: Iterable[TrialState] | None = None
    ) -> list[Trial]:
        """Trials filtered by study and state, in insertion order."""
        clauses: list[str] = []
        args: list[Any] = []
        if study_id is not None:
            clauses.append("study_id = ?")
            args.append(study_id)
        if states is not None:
            clauses.append(_in_list("state"))
            args.append(json.dumps([TrialState(s).value for s in states]))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {TRIAL_COLS} FROM trials{where} ORDER BY id"
        rows = self._run(lambda conn: conn.execute(sql, args).fetchall())
        return [trial_from_row(r) for r in rows]

    def claim_trials(
        self, worker: str, device: str, limit: int = 1, study_id: int | None = None,
        group: bool = False, *, host: str = "", lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[Trial]:
        """Atomically move up to ``limit`` QUEUED trials (oldest first) to RUNNING.

        Claims nothing while the workspace's disk is full (see ``sqlite_db.disk_full``): a
        trial started then could record neither metrics nor checkpoints, so it waits, QUEUED,
        until there is room again.
        """
        if disk_full(self.path):
            return []
        sql, args = "SELECT id, group_key FROM trials WHERE state = 'QUEUED'", []
        if study_id is not None:
            sql, args = sql + " AND study_id = ?", [study_id]
        sql += " ORDER BY id LIMIT ?"
        def write(conn: Connection) -> list[Trial]:
            rows = conn.execute(sql, (*args, 1 if group else max(0, limit))).fetchall()
            ids = [r[0] for r in rows]
            if group and rows and rows[0][1] and limit > 1:
                same_study = "" if study_id is None else " AND study_id = ?"
                more = conn.execute(
                    "SELECT id FROM trials WHERE state = 'QUEUED' AND group_key = ? AND id > ?"
                    f"{same_study} ORDER BY id LIMIT ?",
                    (rows[0][1], rows[0][0], *args, limit - 1))
                ids += [r[0] for r in more]
            if not ids:
                return []
            now = time.time()
            conn.executemany(
                "UPDATE trials SET state = 'RUNNING', attempt = attempt + 1, worker = ?, "
                "device = ?, host = ?, started_at = ?, heartbeat_at = ?, finished_at = NULL, "
                "lease_token = ?, lease_expires = ? WHERE id = ?",
                [(worker, device, host, now, now, secrets.token_hex(16), now + lease_seconds, i)
                 for i in ids],
            )
            return self._trials_by_ids(conn, ids)
        try:
            return self._run(write, write=True)
        except DiskFullError:  # the disk filled since the check: nothing was claimed
            return []

    def next_queued_group_key(self) -> str | None:
        """The group key of the oldest QUEUED trial (None when nothing is queued)."""
        sql = "SELECT group_key FROM trials WHERE state = 'QUEUED' ORDER BY id LIMIT 1"
        row = self._run(lambda conn: conn.execute(sql).fetchone())
        return None if row is None else str(row[0])

    def heartbeat(
        self, trial_ids: Sequence[int], steps_done: Mapping[int, Any] | None = None
    ) -> dict[int, TrialState]:
        """Mark RUNNING trials alive and record progress; return every given trial's state.

        ``steps_done`` maps a trial id to its steps done, or to ``(steps_done, best_step,
        best_value)`` so viewers see the best-so-far of a running trial.
        """
        now = time.time()
        data = []
        for t in trial_ids:
            steps, best_step, best_value = progress_entry((steps_done or {}).get(t))
            data.append((now, steps, best_step, encode_float(best_value), int(t)))
        sql = (
            "UPDATE trials SET heartbeat_at = ?, steps_done = COALESCE(?, steps_done), "
            "best_step = COALESCE(?, best_step), best_value = COALESCE(?, best_value) "
            "WHERE id = ? AND state = 'RUNNING'"
        )
        ids = json.dumps([int(t) for t in trial_ids])

        def write(conn: Connection) -> dict[int, TrialState]:
            conn.executemany(sql, data)
            rows = conn.execute(f"SELECT id, state FROM trials WHERE {_in_list('id')}", (ids,))
            return {int(i): TrialState(st) for i, st in rows}
        return self._run(write, write=True)

    def renew(
        self, leases: Mapping[int, str], steps_done: Mapping[int, Any] | None = None, *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> dict[int, TrialState | None]:
        """Renew held leases and record progress; per trial RUNNING (held), its finished state,
        or None (the lease is lost)."""
        ids = [int(t) for t in leases]

        def write(conn: Connection) -> dict[int, TrialState | None]:
            held = _held(conn, leases, ids) or set()
            now = time.time()
            data = []
            for t in held:
                steps, best_step, best_value = progress_entry((steps_done or {}).get(t))
                data.append((now, now + lease_seconds, steps, best_step, encode_float(best_value), t))
            conn.executemany(
                "UPDATE trials SET heartbeat_at = ?, lease_expires = ?, "
                "steps_done = COALESCE(?, steps_done), best_step = COALESCE(?, best_step), "
                "best_value = COALESCE(?, best_value) WHERE id = ?", data)
            rows = conn.execute(f"SELECT id, state FROM trials WHERE {_in_list('id')}", (_ids_json(ids),))
            out: dict[int, TrialState | None] = {i: None for i in ids}
            for i, st in rows:
                state = TrialState(st)
                out[int(i)] = state if int(i) in held or state.is_finished() else None
            return out
        return self._run(write, write=True) if ids else {}

    def expired_leases(self) -> list[Trial]:
        """RUNNING trials whose lease expired (by this host's clock: SQLite has no other)."""
        sql = (f"SELECT {TRIAL_COLS} FROM trials WHERE state = 'RUNNING' "
               "AND lease_expires IS NOT NULL AND lease_expires < ? ORDER BY id")
        rows = self._run(lambda conn: conn.execute(sql, (time.time(),)).fetchall())
        return [trial_from_row(r) for r in rows]

    def db_time(self) -> float:
        """The store's clock: this host's, for a file on a local disk."""
        return time.time()

    def has_queued(self) -> bool:
        """Whether any trial waits to be claimed (a cheap read, no write lock)."""
        sql = "SELECT 1 FROM trials WHERE state = 'QUEUED' LIMIT 1"
        return self._run(lambda conn: conn.execute(sql).fetchone() is not None)

    def finish_trial(self, trial_id: int, progress: TrialProgress, *, lease: str | None = None) -> Trial:
        """Record the end of an attempt; a trial already finished is refused, and so is a
        ``lease`` the trial no longer holds (LeaseLost)."""
        state = TrialState(progress.state)
        if state in (TrialState.QUEUED, TrialState.RUNNING):
            raise StoreError(f"finish_trial {trial_id}: {state.value} is not an end state")
        def write(conn: Connection) -> Trial:
            current = self._get_trial(conn, trial_id)
            if current.state.is_finished():
                raise StoreError(
                    f"{self.path}: trial {trial_id} is already {current.state.value}"
                )
            if lease is not None and not _held(conn, {trial_id: lease}, [trial_id]):
                raise LeaseLost(f"{self.path}: trial {trial_id}: lease lost; its end is not recorded")
            conn.execute(
                "UPDATE trials SET state = ?, best_step = ?, best_value = ?, steps_done = ?, "
                f"wall_time = ?, error = ?, finished_at = ?, {_NO_LEASE} WHERE id = ?",
                (state.value, _opt_int(progress.best_step), encode_float(progress.best_value),
                 int(progress.steps_done), float(progress.wall_time), progress.error,
                 time.time() if state.is_finished() else None, trial_id),
            )
            return self._get_trial(conn, trial_id)
        return self._run(write, write=True)

    def finish_trials(
        self, items: Sequence[tuple[int, TrialProgress]], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Record the end of many attempts in one transaction; finished trials, and those whose
        lease is not held (with ``leases``), are skipped."""
        now = time.time()
        data = []
        for trial_id, progress in items:
            state = TrialState(progress.state)
            if not state.is_finished():
                raise StoreError(f"finish_trials {trial_id}: {state.value} is not an end state")
            data.append((state.value, _opt_int(progress.best_step), encode_float(progress.best_value),
                         int(progress.steps_done), float(progress.wall_time), progress.error, now,
                         int(trial_id)))
        sql = (
            "UPDATE trials SET state = ?, best_step = ?, best_value = ?, steps_done = ?, "
            f"wall_time = ?, error = ?, finished_at = ?, {_NO_LEASE} WHERE id = ? "
            "AND state NOT IN ('COMPLETED', 'FAILED', 'DIVERGED', 'CANCELLED')"
        )

        def write(conn: Connection) -> list[int]:
            done = []
            held = _held(conn, leases, (row[-1] for row in data))
            for row in data:
                if held is not None and row[-1] not in held:
                    continue
                if conn.execute(sql, row).rowcount:
                    done.append(row[-1])
            return done
        return self._run(write, write=True) if data else []

    def set_state(
        self, trial_ids: Sequence[int], state: TrialState, *, only_from: Iterable[TrialState],
        leases: Mapping[int, str] | None = None,
    ) -> int:
        """Move trials to ``state`` if they are currently in one of ``only_from`` (and, with
        ``leases``, hold the lease named); a trial leaving RUNNING gives its lease up."""
        state = TrialState(state)
        sources = json.dumps([TrialState(s).value for s in only_from])
        finished_at = "?" if state.is_finished() else "NULL"
        lease = "" if state is TrialState.RUNNING else f", {_NO_LEASE}"
        sql = (
            f"UPDATE trials SET state = ?, finished_at = {finished_at}{lease} "
            f"WHERE {_in_list('id')} AND {_in_list('state')}"
        )

        def write(conn: Connection) -> int:
            held = _held(conn, leases, trial_ids)
            ids = trial_ids if held is None else [i for i in trial_ids if int(i) in held]
            args: tuple[Any, ...] = (_ids_json(ids), sources)
            args = (state.value, time.time(), *args) if state.is_finished() else (state.value, *args)
            return conn.execute(sql, args).rowcount
        return self._run(write, write=True)

    def requeue_stale(self, older_than: float) -> list[Trial]:
        """RUNNING trials whose heartbeat (or start) is older than ``older_than`` -> QUEUED."""
        def write(conn: Connection) -> list[Trial]:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM trials WHERE state = 'RUNNING' "
                "AND COALESCE(heartbeat_at, started_at, 0) < ? ORDER BY id", (older_than,),
            )]
            conn.execute(
                f"UPDATE trials SET state = 'QUEUED', {_NO_LEASE} WHERE {_in_list('id')}",
                (_ids_json(ids),),
            )
            return self._trials_by_ids(conn, ids)
        return self._run(write, write=True)

    # ----------------------------------------------------------------- metrics, checkpoints

    def write_metrics(
        self, rows: Sequence[MetricRow], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert: exactly one row per (trial, step, name); a re-reported step replaces it.
        With ``leases``, rows of trials whose lease is not held are dropped (their ids returned)."""
        if not rows:
            return []
        data = [(int(r.trial_id), int(r.step), r.name, encode_float(float(r.value))) for r in rows]
        sql = (
            "INSERT INTO metrics (trial_id, step, name, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (trial_id, step, name) DO UPDATE SET value = excluded.value"
        )

        def write(conn: Connection) -> list[int]:
            held = _held(conn, leases, {d[0] for d in data})
            if held is None:
                conn.executemany(sql, data)
                return []
            conn.executemany(sql, [d for d in data if d[0] in held])
            return sorted({d[0] for d in data} - held)
        return self._run(write, write=True)

    def _metrics_query(
        self, trial_ids: Sequence[int] | None, study_id: int | None,
        names: Sequence[str] | None, since_step: int | None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if trial_ids is not None:
            clauses.append(_in_list("trial_id"))
            args.append(_ids_json(trial_ids))
        if study_id is not None:
            clauses.append("trial_id IN (SELECT id FROM trials WHERE study_id = ?)")
            args.append(study_id)
        if names is not None:
            clauses.append(_in_list("name"))
            args.append(json.dumps(list(names)))
        if since_step is not None:
            clauses.append("step >= ?")
            args.append(since_step)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # The order is the primary key's: a plain index walk, never a sort.
        sql = "SELECT trial_id, step, name, value FROM metrics"
        sql += f"{where} ORDER BY trial_id, step, name"
        return sql, args

    def read_metrics(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]:
        """Metric rows (steps >= ``since_step`` when given) ordered by trial, step, name."""
        sql, args = self._metrics_query(trial_ids, study_id, names, since_step)
        with gc_paused():
            return metric_rows(self._run(lambda conn: conn.execute(sql, args).fetchall()))

    def read_metrics_columns(
        self, trial_ids: Sequence[int] | None = None, study_id: int | None = None,
        names: Sequence[str] | None = None, since_step: int | None = None,
    ) -> dict[str, list[Any]]:
        """As :meth:`read_metrics`, but columns ``trial_id, step, name, value`` (DataFrames)."""
        sql, args = self._metrics_query(trial_ids, study_id, names, since_step)
        with gc_paused():
            rows = self._run(lambda conn: conn.execute(sql, args).fetchall())
            if not rows:
                return {"trial_id": [], "step": [], "name": [], "value": []}
            trial, step, name, value = (list(c) for c in zip(*rows))
            del rows
            if any(v.__class__ is not float for v in value):
                value = [v if v.__class__ is float else float(v) for v in value]
        return {"trial_id": trial, "step": step, "name": name, "value": value}

    def record_checkpoint(self, checkpoint: Checkpoint, *, lease: str | None = None) -> None:
        """Upsert the trial's checkpoint of this kind (LeaseLost when ``lease`` is not held)."""
        leases = None if lease is None else {checkpoint.trial_id: lease}
        if self.record_checkpoints([checkpoint], leases=leases):
            raise LeaseLost(f"{self.path}: trial {checkpoint.trial_id}: lease lost; "
                            f"its {checkpoint.kind} checkpoint is not recorded")

    def record_checkpoints(
        self, checkpoints: Sequence[Checkpoint], *, leases: Mapping[int, str] | None = None,
    ) -> list[int]:
        """Upsert several checkpoints in one transaction (a fused group's); with ``leases``,
        those of trials whose lease is not held are dropped (their ids returned)."""
        sql = (
            "INSERT INTO checkpoints (trial_id, kind, step, path, value, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (trial_id, kind) DO UPDATE SET "
            "step = excluded.step, path = excluded.path, value = excluded.value, "
            "created_at = excluded.created_at"
        )
        rows = [(c.trial_id, c.kind, c.step, c.path, encode_float(c.value), c.created_at)
                for c in checkpoints]
        if not rows:
            return []

        def write(conn: Connection) -> list[int]:
            held = _held(conn, leases, {r[0] for r in rows})
            conn.executemany(sql, rows if held is None else [r for r in rows if r[0] in held])
            return [] if held is None else sorted({r[0] for r in rows} - held)
        return self._run(write, write=True)

    def get_checkpoints(self, trial_id: int) -> list[Checkpoint]:
        """The trial's checkpoints, by kind."""
        sql = (
            "SELECT trial_id, kind, step, path, value, created_at FROM checkpoints "
            "WHERE trial_id = ? ORDER BY kind"
        )
        rows = self._run(lambda conn: conn.execute(sql, (trial_id,)).fetchall())
        return [checkpoint_from_row(r) for r in rows]

    # ----------------------------------------------------------------- decisions, meta

    def record_decision(
        self, experiment_id: int, study_id: int | None, verdict: str,
        candidate: Mapping[str, Any], baseline_version: int, test: str,
        stats: Mapping[str, Any], rationale: str, complexity_note: str,
    ) -> Decision:
        """Append a decision to the experiment's log."""
        check_verdict(verdict)
        def write(conn: Connection) -> Decision:
            self._get_experiment(conn, experiment_id)
            cur = conn.execute(
                f"INSERT INTO decisions ({DECISION_COLS}) "
                "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (experiment_id, study_id, verdict, to_json(candidate, "decision candidate"),
                 int(baseline_version), test, to_json(stats, "decision stats"), rationale,
                 complexity_note, time.time()),
            )
            sql = f"SELECT {DECISION_COLS} FROM decisions WHERE id = ?"
            return decision_from_row(conn.execute(sql, (cur.lastrowid,)).fetchone())
        return self._run(write, write=True)

    def list_decisions(self, experiment_id: int | None = None) -> list[Decision]:
        """Decisions (of one experiment, or all), oldest first."""
        sql, args = f"SELECT {DECISION_COLS} FROM decisions", ()  # type: str, tuple[int, ...]
        if experiment_id is not None:
            sql, args = sql + " WHERE experiment_id = ?", (experiment_id,)
        rows = self._run(lambda conn: conn.execute(sql + " ORDER BY id", args).fetchall())
        return [decision_from_row(r) for r in rows]

    def set_meta(self, key: str, value: str) -> None:
        """Set an engine bookkeeping value (``schema_version`` is not settable)."""
        check_meta_key(key)
        sql = (
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self._run(lambda conn: conn.execute(sql, (key, str(value))), write=True)

    def get_meta(self, key: str) -> str | None:
        """An engine bookkeeping value, or None."""
        row = self._run(
            lambda conn: conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return row[0] if row else None

    def list_meta(self, prefix: str) -> dict[str, str]:
        """Every bookkeeping key starting with ``prefix``, with its value."""
        sql = "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key"
        rows = self._run(lambda conn: conn.execute(sql, (len(prefix), prefix)).fetchall())
        return {k: v for k, v in rows}

    def delete_meta(self, key: str) -> None:
        """Forget a bookkeeping value (``schema_version`` cannot be deleted)."""
        check_meta_key(key)
        self._run(lambda conn: conn.execute("DELETE FROM meta WHERE key = ?", (key,)), write=True)
