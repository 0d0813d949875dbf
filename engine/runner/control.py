"""Start, stop and query the engine daemon of a workspace (used by the CLI and the TUI).

Whether an engine serves a workspace is the kernel's answer about its lock (see
:func:`engine.runner.daemon.engine_pid`), asked without taking the lock, so any number of
concurrent ``status`` calls can neither stop an engine from starting nor read a stale pid.
A pid is signalled only once /proc shows it is this workspace's engine (a pid can be reused).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.runner.daemon import engine_pid, is_engine_process
from engine.store import disk_full, is_shared
from engine.store.base import StoreError

START_TIMEOUT_SECONDS = 20.0


class EngineError(StoreError):
    """The engine could not be started or stopped; the message says why and where to look."""


@dataclass(frozen=True)
class EngineStatus:
    """Whether an engine serves the workspace, and what holds it up.

    Attributes:
        disk_full: why the workspace's disk counts as full ("disk full: ..."), or None. While
            it is, a running engine claims no trial; it carries on once there is room.
    """

    running: bool
    pid: int | None
    log_path: Path
    disk_full: str | None = None

    def describe(self) -> str:
        """``running (pid N)``, ``running (pid N), paused: disk full: ...`` or ``not running``."""
        state = f"running (pid {self.pid})" if self.running and self.pid and self.pid > 0 else (
            "running" if self.running else "not running")
        return f"{state}, paused: {self.disk_full}" if self.running and self.disk_full else state


def engine_status(workspace: Path) -> EngineStatus:
    pid = engine_pid(workspace)
    return EngineStatus(pid is not None, pid, workspace / "logs" / "engine.log", disk_full(workspace))


def host_runtime(shared: Path, host: str | None = None) -> Path:
    """The folder of one host's engine of a shared store: its lock, pid file and logs."""
    return shared / "hosts" / (host or socket.gethostname())


def start_engine(
    workspace: Path, slots_per_gpu: int = 1, cpu_slots: int | None = None, *,
    url: str | None = None, host: str | None = None, lease: float | None = None,
) -> EngineStatus:
    """Start the daemon detached in its own session (it outlives this terminal).

    Returns once an engine holds the workspace's lock: this one, or another started at the
    same moment (only one can serve). With a shared store ``url``, ``workspace`` is the
    shared folder and the engine is this machine's host ``host`` (default: the hostname);
    its lock and logs are in ``<workspace>/hosts/<host>``.
    """
    runtime = host_runtime(workspace, host) if is_shared(url) else workspace
    status = engine_status(runtime)
    if status.running:
        return status
    argv = [sys.executable, "-m", "engine.runner.daemon", "--workspace", str(workspace),
            "--slots-per-gpu", str(slots_per_gpu)]
    if cpu_slots:
        argv += ["--cpu-slots", str(cpu_slots)]
    if is_shared(url):
        argv += ["--store", str(url), "--runtime", str(runtime), "--host", runtime.name]
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    if lease is not None:
        argv += ["--lease", str(lease)]
    with _private_log(status.log_path) as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(workspace.parent),
        )
    deadline = time.time() + START_TIMEOUT_SECONDS
    while time.time() < deadline:
        exited = proc.poll() is not None  # asked first: an engine that won the lock and then
        status = engine_status(runtime)  # exited would otherwise look like one that lost it
        if status.running or exited:
            break
        time.sleep(0.05)
    if status.running:
        return status
    raise EngineError(f"the engine did not start; see {status.log_path}")


def _private_log(path: Path) -> BinaryIO:
    """The engine log, opened for appending; created owner-only (0600) in an owner-only
    folder, whatever this process's umask (the daemon sets its own, but the CLI makes it)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def stop_engine(workspace: Path, timeout: float = 90.0) -> bool:
    """Ask the engine to checkpoint its trials and stop; False if none was running.

    Raises:
        EngineError: the lock's holder is not this workspace's engine (nothing is signalled),
            or the engine did not stop within ``timeout`` seconds.
    """
    pid = engine_pid(workspace)
    if pid is None:
        return False
    if pid <= 0:
        raise EngineError(f"an engine serves {workspace} but its pid is unknown; stop it where it runs")
    if not _signal_engine(pid, workspace, signal.SIGTERM):
        return False  # it stopped by itself meanwhile
    deadline = time.time() + timeout
    while time.time() < deadline:
        if engine_pid(workspace) != pid:
            return True
        time.sleep(0.1)
    raise EngineError(f"the engine (pid {pid}) did not stop within {timeout:.0f} s")


def _signal_engine(pid: int, workspace: Path, sig: signal.Signals) -> bool:
    """Send ``sig`` to ``pid`` if it is this workspace's engine; False if it is gone.

    A pidfd pins the process while /proc is read, so the check and the signal concern the
    same process even if the pid is reused in between (os.kill where there is no pidfd).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        pidfd = -1
    try:
        if not is_engine_process(pid, workspace):
            if engine_pid(workspace) != pid:
                return False  # it exited (and the pid was reused) since we asked
            raise EngineError(f"pid {pid} holds the engine lock of {workspace} but is not its "
                              "engine; not signalling it")
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)
