"""Workspace storage: the ``Storage`` protocol, its SQLite and in-memory implementations.

``open_store`` is the one way the engine, the CLI and the TUI open a workspace.
"""

from __future__ import annotations

import os
from pathlib import Path

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
WORKSPACE_ENV = "TUNEPLAY_WORKSPACE"
DEFAULT_WORKSPACE = ".tuneplay"
WORKSPACE_SUBDIRS = ("checkpoints", "logs")

__all__ = [
    "DB_NAME", "DEFAULT_LEASE_SECONDS", "FINISHED_STATES", "LeaseLost", "SCHEMA_VERSION", "Baseline", "Checkpoint", "Decision",
    "DiskFullError", "Experiment", "MemoryStorage", "MetricRow", "NewTrial", "SQLiteStorage", "Storage",
    "StoreError", "Study", "Trial", "TrialProgress", "TrialState", "disk_full", "open_store",
    "workspace_path",
]


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
