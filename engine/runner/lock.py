"""Which process serves a workspace: the engine's lock on ``engine.lock`` and its pid file.

The engine holds a POSIX lock (and, for engines of older versions, a flock) on
``<workspace>/engine.lock`` for as long as it runs. Anyone may ask the kernel who holds it
(``F_GETLK``) without taking it, so a status check never disturbs an engine that is
starting; ``engine.pid`` (replaced whole, atomically) says the same for people and for pid
namespaces where the kernel cannot.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import IO

LOCK_NAME, PID_NAME = "engine.lock", "engine.pid"
_FLOCK = "@hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (64-bit off_t)
log = logging.getLogger("tuneplay.engine")
_held: dict[str, EngineLock] = {}  # locks this process holds, by path (see engine_pid)


class EngineLock:
    """An exclusive, non-blocking POSIX lock on the workspace's engine.lock file.

    A POSIX lock goes when its process closes *any* descriptor of the file, so this
    process never opens engine.lock again while it holds the lock (``engine_pid`` knows).
    """

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.path = workspace / LOCK_NAME
        self.fh: IO[str] | None = None

    def acquire(self) -> bool:
        fh = open(self.path, "a+")  # noqa: SIM115 (held open as long as the lock)
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # engines before the POSIX lock took a flock: one of them may still serve
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()  # releases the POSIX lock if it was taken
            return False
        self.fh = fh
        _held[str(self.path)] = self
        self._write_pid_file()
        return True

    def _write_pid_file(self) -> None:
        """engine.pid, replaced whole (temp file, then ``os.replace``): a reader sees the
        old engine's or this one's, never a half-written file."""
        path = self.workspace / PID_NAME
        tmp = path.with_name(f".{PID_NAME}.{os.getpid()}")
        record = {"pid": os.getpid(), "started": time.time(), "workspace": str(self.workspace)}
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(record))
            os.replace(tmp, path)
        except OSError as exc:  # a full disk, say: the lock alone says who serves
            log.warning("could not write %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def still_ours(self) -> bool:
        """False once the lock file was deleted or replaced (the workspace was removed)."""
        try:
            return self.fh is not None and os.stat(self.path).st_ino == os.fstat(self.fh.fileno()).st_ino
        except OSError:
            return False


def engine_pid(workspace: Path) -> int | None:
    """The pid of the engine serving ``workspace``, or None when no process holds its lock.

    Asks the kernel who holds the lock (``F_GETLK``) without taking it, so concurrent
    callers never disturb an engine that is starting. -1: an engine holds the lock but its
    pid is unknown (it runs in another pid namespace and engine.pid could not be read).
    """
    path = workspace / LOCK_NAME
    if str(path) in _held:  # opening (and closing) it here would release our own lock
        return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query + bytes(8))
    finally:
        os.close(fd)
    kind, _, _, _, pid = struct.unpack(_FLOCK, answer[: struct.calcsize(_FLOCK)])
    if kind == fcntl.F_UNLCK:
        return None
    return pid if pid > 0 else _pid_from_file(workspace)


def _pid_from_file(workspace: Path) -> int:
    try:
        return int(json.loads((workspace / PID_NAME).read_text()).get("pid", -1))
    except (OSError, ValueError, AttributeError):
        return -1


def is_engine_process(pid: int, workspace: Path) -> bool:
    """Whether ``pid`` runs this module for ``workspace`` (from /proc; True where there is
    no /proc to ask). Checked before signalling a pid, which may have been reused."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    if "engine.runner.daemon" not in argv or "--workspace" not in argv:
        return False
    flag = "--runtime" if "--runtime" in argv else "--workspace"  # an engine of a shared store
    i = argv.index(flag) + 1
    return i < len(argv) and os.path.realpath(argv[i]) == os.path.realpath(workspace)
