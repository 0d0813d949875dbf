"""The workspace's SQLite file: schema, connections and transactions (no domain logic).

Every write runs in ``BEGIN IMMEDIATE ... COMMIT`` and is retried with backoff while
another process holds the write lock, so "database is locked" never reaches a caller.
Each process opens its own connection lazily (the object survives ``fork``); threads of
one process share it behind a lock.

A new database is built under a temporary name and linked into place, so a
``tuneplay.db`` is never seen half made; an empty (0-byte) one is refused rather than
silently made into a new, empty workspace beside the old one's checkpoints. A full disk
raises :class:`DiskFullError`, saying "disk full" (SQLite itself often says only "disk I/O
error" when it cannot grow its shared-memory file).
"""

from __future__ import annotations

import errno
import os
import random
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from engine.store.base import SCHEMA_VERSION, StoreError

T = TypeVar("T")
Connection = sqlite3.Connection

NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "sshfs", "fuse.sshfs", "afs", "ncpfs"}
)
BUSY_TIMEOUT_S = 30.0
LOCK_WAIT_S = 600.0  # give up (with a StoreError) after this long of continuous contention
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.002, 0.25
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (the low byte of extended codes)
_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_CANTOPEN = 13, 10, 14
# Less free space than this on the workspace's disk counts as full: trials are not claimed
# (a trial started now could record neither metrics nor checkpoints). SQLite's journal needs
# a few MiB at most; any real disk with less than this left is full for our purposes.
DISK_RESERVE_BYTES = 16 * 2**20


class DiskFullError(StoreError):
    """The workspace's disk has no room left; waiting for space (not retrying) is the cure."""


class _NeedsMigration(Exception):
    """Raised out of the schema check to upgrade outside its transaction (a backup first)."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def _schema_version(conn: Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row else None
    except ValueError:
        return None

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE experiments (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, workload TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE baselines (
        id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        version INTEGER NOT NULL, config TEXT NOT NULL, metric TEXT NOT NULL,
        mode TEXT NOT NULL, max_train_steps INTEGER NOT NULL, note TEXT NOT NULL,
        created_at REAL NOT NULL, UNIQUE (experiment_id, version))""",
    """CREATE TABLE studies (
        id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        name TEXT NOT NULL UNIQUE, spec TEXT NOT NULL, seed INTEGER NOT NULL,
        next_index INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
        source_path TEXT NOT NULL DEFAULT '')""",
    # best_value has no type affinity: REAL, or TEXT ('nan', 'inf') for non-finite values.
    """CREATE TABLE trials (
        id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
        number INTEGER NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL,
        state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, point_index INTEGER NOT NULL,
        kind TEXT NOT NULL, max_train_steps INTEGER NOT NULL, created_at REAL NOT NULL,
        started_at REAL, finished_at REAL, heartbeat_at REAL, device TEXT NOT NULL DEFAULT '',
        worker TEXT NOT NULL DEFAULT '', best_step INTEGER, best_value,
        steps_done INTEGER NOT NULL DEFAULT 0, wall_time REAL NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '', group_key TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL DEFAULT '', lease_token TEXT NOT NULL DEFAULT '', lease_expires REAL,
        UNIQUE (study_id, number))""",
    "CREATE INDEX trials_by_study ON trials (study_id)",
    "CREATE INDEX trials_by_state ON trials (state)",
    # The primary key is the "metrics by trial" index and enforces one row per
    # (trial, step, name); value has no affinity so non-finite values can be kept as TEXT.
    """CREATE TABLE metrics (
        trial_id INTEGER NOT NULL REFERENCES trials(id), step INTEGER NOT NULL,
        name TEXT NOT NULL, value, PRIMARY KEY (trial_id, step, name)) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (
        trial_id INTEGER NOT NULL REFERENCES trials(id), kind TEXT NOT NULL,
        step INTEGER NOT NULL, path TEXT NOT NULL, value, created_at REAL NOT NULL,
        PRIMARY KEY (trial_id, kind))""",
    """CREATE TABLE decisions (
        id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
        study_id INTEGER REFERENCES studies(id), verdict TEXT NOT NULL, candidate TEXT NOT NULL,
        baseline_version INTEGER NOT NULL, test TEXT NOT NULL, stats TEXT NOT NULL,
        rationale TEXT NOT NULL, complexity_note TEXT NOT NULL, created_at REAL NOT NULL)""",
)


# Ordered migrations: MIGRATIONS[v] takes a database of schema version v to v + 1. A
# workspace of an older version is upgraded on open, in one transaction, after a copy of the
# file is kept beside it (``tuneplay.db.v<old>.bak``).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE trials ADD COLUMN group_key TEXT NOT NULL DEFAULT ''",),
    2: ("ALTER TABLE trials ADD COLUMN host TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE trials ADD COLUMN lease_token TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE trials ADD COLUMN lease_expires REAL",
        # a trial running when the workspace was upgraded holds a lease its worker never had:
        # it expires as its heartbeat would have gone stale, and the trial resumes
        "UPDATE trials SET lease_token = 'v2-' || id, "
        "lease_expires = COALESCE(heartbeat_at, started_at, 0) + 5 WHERE state = 'RUNNING'"),
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "one migration per older version"


def filesystem_type(path: str | Path, mounts: str | Path = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (None when the mount table is unreadable)."""
    try:
        table = Path(mounts).read_text()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, fstype = "", None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = mountpoint == "/" or target == mountpoint or target.startswith(
            mountpoint.rstrip("/") + "/"
        )
        if inside and len(mountpoint) >= len(best):  # later mounts shadow earlier ones
            best, fstype = mountpoint, fields[2]
    return fstype


def refuse_network_filesystem(path: str | Path, mounts: str | Path = "/proc/mounts") -> None:
    """Raise StoreError when ``path`` lives on a network filesystem (SQLite locking breaks)."""
    fstype = filesystem_type(path, mounts)
    if fstype in NETWORK_FILESYSTEMS:
        raise StoreError(
            f"{path}: the workspace is on a network filesystem ({fstype}), where SQLite "
            "locking is unreliable; put it on a local disk (--workspace DIR or "
            "TUNEPLAY_WORKSPACE)"
        )


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (None when unknown)."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        st = os.statvfs(target)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(path: str | Path) -> str | None:
    """Why the disk holding ``path`` counts as full ("disk full: ..."), or None.

    One ``statvfs`` call: cheap enough for a worker to ask before every claim.
    """
    free = free_bytes(path)
    if free is None or free >= DISK_RESERVE_BYTES:
        return None
    return (f"disk full: {_size(free)} free on the disk holding {path} "
            f"(tuneplay needs {_size(DISK_RESERVE_BYTES)}); free some space and trials carry on")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


def store_error(path: Path, exc: sqlite3.Error | OSError) -> StoreError:
    """``exc`` as a StoreError naming ``path``; a DiskFullError when the disk is full, also when
    SQLite reports that only as an I/O error (it cannot grow its -shm or -wal file)."""
    code = getattr(exc, "sqlite_errorcode", None)
    low = None if code is None else code & 0xFF
    full = (low == _SQLITE_FULL or "disk is full" in str(exc)
            or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT))
    if full or (low in (_SQLITE_IOERR, _SQLITE_CANTOPEN) and disk_full(path)):
        free = free_bytes(path)
        room = f" ({_size(free)} free)" if free is not None else ""
        return DiskFullError(f"{path}: disk full{room}: free some space on the workspace's disk")
    return StoreError(f"{path}: {exc}")


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock (worth retrying)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    text = str(exc)
    return "locked" in text or "busy" in text


class Database:
    """One SQLite workspace file: schema checked on open, transactions with retry.

    Args:
        path: the database file; created owner-only (0o600) with the schema when missing.
        busy_timeout: seconds SQLite itself waits for a lock before the retry loop backs off.

    Raises:
        StoreError: the file is empty (0 bytes), not a tuneplay database, of another schema
            version, or on a network filesystem; DiskFullError when the disk is full.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._pid = os.getpid()
        self._inherited: list[Connection] = []
        refuse_network_filesystem(self.path if self.path.exists() else self.path.parent)
        self._refuse_empty()
        self._create_file()
        try:
            self.run(self._init_schema, write=True)
        except _NeedsMigration as old:
            self._migrate(old.version)

    def run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``fn`` in one transaction, retrying with backoff while the database is busy.

        Writes take the write lock up front (``BEGIN IMMEDIATE``), so a read-then-write
        inside ``fn`` is atomic across processes. Any other SQLite error becomes a
        StoreError naming the file.
        """
        delay, deadline = _FIRST_BACKOFF_S, time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                return self._attempt(fn, write)
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise store_error(self.path, exc) from exc
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.path}: the workspace database stayed busy for {LOCK_WAIT_S:.0f} s"
                    ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _MAX_BACKOFF_S)

    def close(self) -> None:
        """Close this process's connection; the next ``run`` reconnects."""
        if self._pid != os.getpid():
            return
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _attempt(self, fn: Callable[[Connection], T], write: bool) -> T:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._pid != os.getpid():
            # A forked child: the parent's connection (and lock state) must be neither used
            # nor closed here; keep it referenced so it is never finalized in this process.
            if self._conn is not None:
                self._inherited.append(self._conn)
            self._conn, self._lock, self._pid = None, threading.Lock(), os.getpid()
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            yield self._conn

    def _connect(self) -> Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _refuse_empty(self) -> None:
        """A 0-byte database lost its workspace (truncated, or replaced by an empty file):
        SQLite would take it as a new, empty one and the old checkpoints would be orphaned."""
        try:
            empty = self.path.stat().st_size == 0
        except FileNotFoundError:
            return
        except OSError as exc:
            raise store_error(self.path, exc) from exc
        if empty:
            raise StoreError(
                f"{self.path}: the workspace database is empty (0 bytes), so its studies and "
                "trials are lost; restore it from a backup, or move it away to start a new "
                "workspace here"
            )

    def _create_file(self) -> None:
        """Build a new database under a temporary name, then link it into place: another
        process sees either no file or a whole one (never an empty file to refuse)."""
        if self.path.exists():
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            os.chmod(tmp, 0o600)  # SQLite gives the -wal and -shm files the same mode
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                self._write_schema(conn)
                conn.execute("COMMIT")
            finally:
                conn.close()  # the last connection checkpoints and removes tmp's -wal file
            self._link_into_place(tmp)
        except (OSError, sqlite3.Error) as exc:
            error = store_error(self.path, exc)
            if not isinstance(error, DiskFullError):
                error = StoreError(f"{self.path}: cannot create the workspace database: {exc}")
            raise error from exc
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def _link_into_place(self, tmp: Path) -> None:
        try:
            os.link(tmp, self.path)  # fails if another process created the workspace first
        except FileExistsError:
            pass  # theirs stands
        except OSError:  # a filesystem without hard links: a rename, unless one appeared
            if not self.path.exists():
                os.replace(tmp, self.path)

    def _init_schema(self, conn: Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            found = _schema_version(conn)
            if found == SCHEMA_VERSION:
                return
            if found is not None and found > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: workspace schema version {found} is newer than "
                                 f"this tuneplay reads ({SCHEMA_VERSION}); upgrade tuneplay")
            if found is None or found < min(MIGRATIONS):
                raise StoreError(f"{self.path}: workspace schema version "
                                 f"{found if found is not None else 'none'}, this tuneplay expects "
                                 f"{SCHEMA_VERSION} and upgrades from {min(MIGRATIONS)} on")
            raise _NeedsMigration(found)
        if tables:
            raise StoreError(f"{self.path}: not a tuneplay workspace database")
        self._write_schema(conn)

    def _migrate(self, found: int) -> None:
        """Upgrade a workspace of schema ``found`` to SCHEMA_VERSION in one transaction, after
        keeping a copy of the file (SQLite's backup API: consistent even while others read)."""
        backup = self.path.with_name(f"{self.path.name}.v{found}.bak")
        try:
            if not backup.exists():
                with sqlite3.connect(self.path) as src, sqlite3.connect(backup) as dst:
                    src.backup(dst)
                os.chmod(backup, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot keep a backup before upgrading the schema "
                             f"from version {found}: {exc}") from exc

        def upgrade(conn: Connection) -> None:
            current = _schema_version(conn)
            if current == SCHEMA_VERSION:  # another process upgraded it meanwhile
                return
            assert current is not None
            for version in range(current, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        self.run(upgrade, write=True)

    @staticmethod
    def _write_schema(conn: Connection) -> None:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (repr(time.time()),))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "busy_timeout": self.busy_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], busy_timeout=state["busy_timeout"])  # type: ignore[misc]
