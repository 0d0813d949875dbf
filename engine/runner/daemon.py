"""The engine daemon: one per workspace, detached from the terminal that started it.

It holds an exclusive lock on ``<workspace>/engine.lock`` (so only one engine serves a
workspace), keeps one warm worker process per slot, replaces workers that die (failing the
trial a dead worker held, with the signal that killed it), resumes trials whose heartbeat
went stale, tops up Bayesian studies as results arrive, and on SIGTERM asks every worker to
checkpoint and leave its trial PAUSED, to be resumed by the next engine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from engine.runner.checkpoint_writer import remove_orphans
from engine.runner.slots import Slot, plan_slots
from engine.store import open_store
from engine.store.base import Storage, TrialProgress, TrialState

STALE_SECONDS = 5.0  # a live worker beats every second
LOOP_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 5
log = logging.getLogger("tuneplay.engine")


class EngineLock:
    """An exclusive, non-blocking flock on the workspace's engine.lock file."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / "engine.lock"
        self.fh: IO[str] | None = None

    def acquire(self) -> bool:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "started": time.time()}))
        fh.flush()
        self.fh = fh
        return True

    def still_ours(self) -> bool:
        """False once the lock file was deleted or replaced (the workspace was removed)."""
        try:
            return self.fh is not None and os.stat(self.path).st_ino == os.fstat(self.fh.fileno()).st_ino
        except OSError:
            return False


def engine_pid(workspace: Path) -> int | None:
    """The pid of the engine serving ``workspace``, or None when none holds the lock."""
    path = workspace / "engine.lock"
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            try:
                return int(json.loads(fh.read() or "{}").get("pid", 0)) or -1
            except ValueError:
                return -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


class Engine:
    """Supervises workers for one workspace."""

    def __init__(self, store: Storage, workspace: Path, slots: Sequence[Slot], lock: EngineLock | None = None) -> None:
        self.lock = lock
        self.store = store
        self.workspace = workspace
        self.slots = list(slots)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self) -> None:
        orphans = remove_orphans(self.workspace / "checkpoints")
        if orphans:
            log.info("removed %d half-written checkpoint files of killed workers", orphans)
        resumed = self.store.requeue_stale(time.time() - STALE_SECONDS)
        paused = self._resume_paused()
        log.info("engine up: %d slots (%s); resumed %d stale and %d paused trials",
                 len(self.slots), ", ".join(s.name for s in self.slots), len(resumed), paused)
        self.store.set_meta("engine.slots", json.dumps([s.name for s in self.slots]))
        for slot in self.slots:
            self._spawn(slot)

    def _resume_paused(self) -> int:
        raw = self.store.get_meta("engine.paused_by_stop")
        ids = json.loads(raw) if raw else []
        self.store.set_meta("engine.paused_by_stop", "[]")
        return self.store.set_state(ids, TrialState.QUEUED, only_from=[TrialState.PAUSED]) if ids else 0

    def _spawn(self, slot: Slot) -> None:
        env = {**os.environ, **dict(slot.env), "OMP_NUM_THREADS": str(slot.threads), "PYTHONUNBUFFERED": "1"}
        log_path = self.workspace / "logs" / f"worker-{slot.name}.log"
        with open(log_path, "ab") as log_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.runner.worker", "--workspace", str(self.workspace),
                 "--name", slot.name, "--device", slot.device, "--label", slot.label,
                 "--threads", str(slot.threads)],
                env=env, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
            )
        self.workers[slot.name] = proc

    def loop(self) -> None:
        last_stale_check = 0.0
        while not self.stopping:
            if self.lock is not None and not self.lock.still_ours():
                log.error("the workspace %s was removed or replaced; stopping", self.workspace)
                self.stopping = True
                break
            self.store.set_meta("engine.heartbeat", str(time.time()))
            self._reap()
            if time.time() - last_stale_check > 1.0:
                for trial in self.store.requeue_stale(time.time() - STALE_SECONDS):
                    log.info("trial %s: heartbeat went stale; requeued to resume", trial.id)
                last_stale_check = time.time()
            self._top_up_bayesian()
            time.sleep(LOOP_SECONDS)
        self._shutdown()

    def _reap(self) -> None:
        """Replace dead workers; a trial a worker held when it died failed with that signal."""
        for slot in self.slots:
            proc = self.workers.get(slot.name)
            if proc is None or proc.poll() is None:
                continue
            reason = _exit_reason(proc.returncode)
            log.warning("worker %s %s; restarting it", slot.name, reason)
            for trial in self.store.list_trials(states=[TrialState.RUNNING]):
                if trial.worker == slot.name:
                    self.store.finish_trial(trial.id, TrialProgress(
                        state=TrialState.FAILED, steps_done=trial.steps_done,
                        best_step=trial.best_step, best_value=trial.best_value,
                        error=f"worker {reason} during the trial"))
            if not self.stopping:
                self._spawn(slot)

    def _top_up_bayesian(self) -> None:
        from engine.workspace import top_up_bayesian

        try:
            top_up_bayesian(self.store, free_slots=len(self.slots))
        except Exception:
            log.exception("bayesian top-up failed")

    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        """Ask workers to checkpoint and stop; their running trials are left PAUSED."""
        running_before = {t.id for t in self.store.list_trials(states=[TrialState.RUNNING])}
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT_SECONDS
        for proc in self.workers.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
        paused = [t.id for t in self.store.list_trials(states=[TrialState.PAUSED]) if t.id in running_before]
        leftover = [t.id for t in self.store.list_trials(states=[TrialState.RUNNING]) if t.id in running_before]
        if leftover:  # a worker that did not answer in time: its trial resumes from its checkpoint
            self.store.set_state(leftover, TrialState.PAUSED, only_from=[TrialState.RUNNING])
        self.store.set_meta("engine.paused_by_stop", json.dumps(paused + leftover))
        self.store.set_meta("engine.heartbeat", "0")
        log.info("engine stopped; %d trials paused, resumed on next start", len(paused) + len(leftover))


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneplay-engine")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--slots-per-gpu", type=int, default=1)
    parser.add_argument("--cpu-slots", type=int, default=None)
    args = parser.parse_args(argv)
    workspace = Path(args.workspace)
    os.umask(0o077)  # workspace files are the owner's alone
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    lock = EngineLock(workspace)
    if not lock.acquire():
        log.error("another engine already serves %s", workspace)
        return 1
    store = open_store(workspace)
    engine = Engine(store, workspace, plan_slots(args.slots_per_gpu, args.cpu_slots), lock)
    signal.signal(signal.SIGTERM, engine.request_stop)
    signal.signal(signal.SIGINT, engine.request_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    engine.start()
    engine.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
