"""Where an engine of a shared store lives: its host name, its runtime folder in the folder
every host shares, and the check that this folder really is the shared one.

With a PostgreSQL store, ``--checkpoints DIR`` (``$TUNEPLAY_CHECKPOINTS``) is the folder all
hosts mount: checkpoints in ``checkpoints/``, each host's lock, pid file and logs in
``hosts/<host>/``. Each live host keeps a record in the store (``engine.host.<name>``),
refreshed every HOST_BEAT_SECONDS; one older than HOST_ALIVE_SECONDS is counted gone.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from engine.store import is_shared
from engine.store.base import Storage, StoreError

SHARED_LEASE_SECONDS = 60.0  # a lease on a shared store: a network blip must not lose a trial
HOST_BEAT_SECONDS = 1.0  # how often a host's record (its slots, its clock) is refreshed
HOST_ALIVE_SECONDS = 10.0  # a host whose record is older than this is counted gone


CHECKPOINTS_ENV = "TUNEPLAY_CHECKPOINTS"
FOLDER_ID_FILE = ".tuneplay-store-id"


def places(args: argparse.Namespace, url: str | None) -> tuple[Path, str, Path]:
    """The workspace (the shared folder, with a shared store), this engine's host name, and
    its runtime folder (lock, pid file, logs: ``<shared>/hosts/<host>`` on a shared store)."""
    if not is_shared(url):
        if not args.workspace:
            raise StoreError("--workspace is required without a shared --store")
        workspace = Path(args.workspace).expanduser().absolute()
        return workspace, args.host or "", Path(args.runtime) if args.runtime else workspace
    folder = args.checkpoints or os.environ.get(CHECKPOINTS_ENV) or args.workspace
    if not folder:
        raise StoreError(f"a shared store needs a folder every host shares: --checkpoints DIR "
                         f"or {CHECKPOINTS_ENV} (an NFS mount, say)")
    workspace = Path(folder).expanduser().absolute()
    if not workspace.is_dir():
        raise StoreError(f"--checkpoints {workspace}: no such folder (it must exist, shared by every host)")
    if not os.access(workspace, os.W_OK | os.X_OK):
        raise StoreError(f"--checkpoints {workspace}: not writable by this user")
    name = args.host or socket.gethostname()
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"--host {name!r}: a host name must be non-empty, without '/', not starting with '.'")
    return workspace, name, Path(args.runtime) if args.runtime else workspace / "hosts" / name


def check_shared_folder(store: Storage, folder: Path) -> None:
    """Make sure every host of a shared store uses the same folder: the store keeps an id
    that the folder's ``.tuneplay-store-id`` file must hold (written by the first engine).

    Raises:
        StoreError: the folder holds another store's id, or none while the store has one.
    """
    marker = folder / FOLDER_ID_FILE
    known = store.get_meta("shared_folder.id")
    found = marker.read_text().strip() if marker.exists() else None
    first = known is None
    if known is None:  # the store's first engine: this folder is the one
        known = found or os.urandom(8).hex()
        store.set_meta("shared_folder.id", known)
    if found is None and first:
        tmp = folder / f".{FOLDER_ID_FILE}.{os.getpid()}"
        tmp.write_text(known + "\n")
        os.replace(tmp, marker)
        found = known
    if found != known:
        raise StoreError(
            f"--checkpoints {folder}: not the folder the other hosts of this store use "
            f"({FOLDER_ID_FILE} {'holds another id' if found else 'is missing'}); mount the shared "
            "folder at this path, or pass the path where it is mounted")
    (folder / "checkpoints").mkdir(mode=0o700, exist_ok=True)
