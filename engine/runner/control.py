"""Start, stop and query the engine daemon of a workspace (used by the CLI and the TUI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.runner.daemon import engine_pid
from engine.store.base import StoreError

START_TIMEOUT_SECONDS = 20.0


class EngineError(StoreError):
    """The engine could not be started or stopped; the message says why and where to look."""


@dataclass(frozen=True)
class EngineStatus:
    running: bool
    pid: int | None
    log_path: Path


def engine_status(workspace: Path) -> EngineStatus:
    pid = engine_pid(workspace)
    return EngineStatus(pid is not None, pid, workspace / "logs" / "engine.log")


def start_engine(workspace: Path, slots_per_gpu: int = 1, cpu_slots: int | None = None) -> EngineStatus:
    """Start the daemon detached in its own session (it outlives this terminal)."""
    status = engine_status(workspace)
    if status.running:
        return status
    (workspace / "logs").mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "engine.runner.daemon", "--workspace", str(workspace),
            "--slots-per-gpu", str(slots_per_gpu)]
    if cpu_slots:
        argv += ["--cpu-slots", str(cpu_slots)]
    with open(status.log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(workspace.parent),
        )
    deadline = time.time() + START_TIMEOUT_SECONDS
    while time.time() < deadline:
        status = engine_status(workspace)
        if status.running:
            return status
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise EngineError(f"the engine did not start; see {status.log_path}")


def stop_engine(workspace: Path, timeout: float = 90.0) -> bool:
    """Ask the engine to checkpoint its trials and stop; False if none was running."""
    pid = engine_pid(workspace)
    if pid is None:
        return False
    if pid > 0:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
    deadline = time.time() + timeout
    while time.time() < deadline:
        if engine_pid(workspace) is None:
            return True
        time.sleep(0.1)
    raise EngineError(f"the engine (pid {pid}) did not stop within {timeout:.0f} s")
