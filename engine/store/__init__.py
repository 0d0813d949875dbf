"""Workspace storage: the ``Storage`` protocol, its SQLite and in-memory implementations.

``open_store`` is the one way the engine, the CLI and the TUI open a workspace.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engine.store.base import (
    DEFAULT_LEASE_SECONDS,
    FINISHED_STATES,
    SCHEMA_VERSION,
    Baseline,
    Checkpoint,
    Decision,
    Experiment,
    LeaseLost,
    MetricRow,
    NewTrial,
    Storage,
    StoreError,
    Study,
    Trial,
    TrialProgress,
    TrialState,
)
from engine.store.memory import MemoryStorage
from engine.store.sqlite import SQLiteStorage
from engine.store.sqlite_db import DiskFullError, disk_full

DB_NAME = "tuneplay.db"
STORE_ENV = "TUNEPLAY_STORE"
POSTGRES_SCHEMES = ("postgresql", "postgres")
WORKSPACE_ENV = "TUNEPLAY_WORKSPACE"
DEFAULT_WORKSPACE = ".tuneplay"
WORKSPACE_SUBDIRS = ("checkpoints", "logs")

__all__ = [
    "DB_NAME",
    "DEFAULT_LEASE_SECONDS",
    "FINISHED_STATES",
    "SCHEMA_VERSION",
    "Baseline",
    "Checkpoint",
    "Decision",
    "DiskFullError",
    "Experiment",
    "LeaseLost",
    "MemoryStorage",
    "MetricRow",
    "NewTrial",
    "SQLiteStorage",
    "Storage",
    "StoreError",
    "Study",
    "Trial",
    "TrialProgress",
    "TrialState",
    "connect",
    "disk_full",
    "is_shared",
    "open_store",
    "redact_url",
    "store_url",
    "workspace_path",
]


def store_url(explicit: str | None = None) -> str | None:
    """The store to use: ``--store URL``, else ``$TUNEPLAY_STORE``, else None (the workspace's
    embedded SQLite file)."""
    chosen = explicit if explicit else os.environ.get(STORE_ENV, "")
    return chosen.strip() or None


def is_shared(url: str | None) -> bool:
    """Whether ``url`` names a store shared by engines on many hosts (PostgreSQL)."""
    return bool(url) and urlsplit(str(url)).scheme in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """``url`` fit to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def connect(url: str | None, workspace: str | os.PathLike[str]) -> Storage:
    """Open the store ``url`` names, or the workspace's SQLite file when it names none.

    With a PostgreSQL store, ``workspace`` is the folder shared by every host (checkpoints
    and engine logs); claims stop while its disk is full, as with SQLite.

    Raises:
        StoreError: an unknown kind of URL, an unreachable server, a missing or other schema.
    """
    if not url:
        return open_store(workspace)
    if is_shared(url):
        from engine.store.postgres import PostgresStorage

        return PostgresStorage(url, checkpoints=Path(workspace).expanduser().absolute() / "checkpoints")
    raise StoreError(
        f"store {redact_url(url)}: not a store tuneplay knows; give postgresql://USER@HOST:PORT/DB, "
        "or no --store for the workspace's own SQLite file"
    )


def workspace_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder: ``--workspace DIR``, else ``$TUNEPLAY_WORKSPACE``, else ``.tuneplay``.

    The result is absolute, so a daemon that changes directory keeps the same workspace.
    """
    chosen = explicit if explicit else os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    return Path(chosen).expanduser().absolute()


def _make_private_dir(path: Path) -> None:
    """Create ``path`` owner-only; an existing folder keeps its mode (it may be the user's)."""
    if path.is_dir():
        return
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is narrowed by the umask, never widened
    except FileExistsError:
        if not path.is_dir():
            raise StoreError(f"{path}: exists and is not a folder") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the workspace folder: {exc}") from exc


def open_store(workspace: str | os.PathLike[str]) -> SQLiteStorage:
    """Open (creating if needed) the workspace at ``workspace``: the database and its folders.

    Raises:
        StoreError: the folder cannot be created, it is on a network filesystem, or its
            database is empty (0 bytes) or has another schema version; DiskFullError (a
            StoreError) when the disk is full.
    """
    root = Path(workspace).expanduser().absolute()
    _make_private_dir(root)
    for sub in WORKSPACE_SUBDIRS:
        _make_private_dir(root / sub)
    return SQLiteStorage(root / DB_NAME)
