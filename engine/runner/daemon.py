"""The engine daemon: one per workspace, detached from the terminal that started it.

It holds an exclusive lock on ``<workspace>/engine.lock`` (so only one engine serves a
workspace), keeps one warm worker process per slot, replaces workers that die (the trial a
dead worker held resumes from its checkpoint, FAILED with every attempt's reason once
MAX_ATTEMPTS are spent), ends command programs a dead worker left running, resumes trials
whose heartbeat went stale, tops up Bayesian studies as results arrive, and on SIGTERM asks every worker to
checkpoint and leave its trial PAUSED, to be resumed by the next engine.

Slots are as wide as the widest study with work left needs (``gpus_per_trial``): when queued
trials need other slots, the engine waits until no trial runs (workers stop claiming once
the oldest queued trial is too wide for them), then replaces its workers. Trials needing more
GPUs than the host has end FAILED at once, saying why, instead of waiting forever.
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
from engine.runner.command import end_orphan, end_orphans
from engine.runner.slots import HostSlots, Slot
from engine.store import open_store
from engine.store.base import Storage, Study, Trial, TrialProgress, TrialState

STALE_SECONDS = 5.0  # a live worker beats every second
LOOP_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3  # a trial whose worker dies or freezes this often is FAILED, not retried
FIT_SECONDS = 1.0  # how often the engine checks that its slots fit the studies with work left
ACTIVE_STATES = (TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED)
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


def study_width(study: Study) -> int:
    """A stored study's ``gpus_per_trial`` (studies stored before the key existed: 1)."""
    return int(study.spec.get("gpus_per_trial", 1) or 1)


def wide_studies(store: Storage) -> dict[int, int]:
    """``gpus_per_trial`` of each study wider than one GPU that has QUEUED, RUNNING or PAUSED
    trials (cheap in the usual case: one read of the studies, none of them wide)."""
    wide = [s for s in store.list_studies() if study_width(s) > 1]
    return {s.id: study_width(s) for s in wide if store.list_trials(s.id, states=ACTIVE_STATES)}


def planned_width(store: Storage, host: HostSlots) -> int:
    """The slot width the engine plans: the widest study with work left that fits the host."""
    return _fitting_width(wide_studies(store), host)


def _fitting_width(widths: dict[int, int], host: HostSlots) -> int:
    return max([1, *(w for w in widths.values() if host.problem(w) is None)])


class Engine:
    """Supervises workers for one workspace.

    ``host`` says how to plan slots of another width; without it, the engine replans from
    what ``slots`` show of the host (their GPUs, or their number of CPU slots).
    """

    def __init__(
        self, store: Storage, workspace: Path, slots: Sequence[Slot], lock: EngineLock | None = None,
        host: HostSlots | None = None,
    ) -> None:
        self.lock = lock
        self.store = store
        self.workspace = workspace
        self.slots = list(slots)
        self.host = host if host is not None else HostSlots.holding(self.slots)
        self.width = max((s.width for s in self.slots), default=1)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self) -> None:
        orphans = remove_orphans(self.workspace / "checkpoints")
        if orphans:
            log.info("removed %d half-written checkpoint files of killed workers", orphans)
        ended = end_orphans(self.workspace / "checkpoints")
        if ended:
            log.info("ended %d command programs left running by killed workers", len(ended))
        resumed = self._requeue_stale()
        paused = self._resume_paused()
        widths = wide_studies(self.store)
        self._fail_unfit(widths)
        width = _fitting_width(widths, self.host)
        if width != self.width:  # no worker yet: just plan other slots
            self.slots, self.width = self.host.plan(width), width
        log.info("engine up: %d slots (%s); resumed %d stale and %d paused trials",
                 len(self.slots), ", ".join(s.name for s in self.slots), len(resumed), paused)
        self._spawn_all()

    def _spawn_all(self) -> None:
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
        last_stale_check = last_fit = 0.0
        while not self.stopping:
            if self.lock is not None and not self.lock.still_ours():
                log.error("the workspace %s was removed or replaced; stopping", self.workspace)
                self.stopping = True
                break
            self.store.set_meta("engine.heartbeat", str(time.time()))
            self._reap()
            if time.time() - last_stale_check > 1.0:
                for trial in self._requeue_stale():
                    log.info("trial %s: heartbeat went stale; requeued to resume", trial.id)
                last_stale_check = time.time()
            self._top_up_bayesian()
            if time.time() - last_fit > FIT_SECONDS:  # after the top-up: its new trials count
                self._fit_slots()
                last_fit = time.time()
            time.sleep(LOOP_SECONDS)
        self._shutdown()

    def _reap(self) -> None:
        """Replace dead workers. A trial a worker held when it died is tried again from its
        last checkpoint (the program a command trial left running is ended first); after
        MAX_ATTEMPTS attempts it is FAILED, each attempt's reason in its error."""
        for slot in self.slots:
            proc = self.workers.get(slot.name)
            if proc is None or proc.poll() is None:
                continue
            reason = _exit_reason(proc.returncode)
            log.warning("worker %s %s; restarting it", slot.name, reason)
            for trial in self.store.list_trials(states=[TrialState.RUNNING]):
                if trial.worker == slot.name:
                    end_orphan(self.workspace / "checkpoints" / str(trial.id))
                    self._retry_or_fail(trial, f"worker {reason} during the trial")
            if not self.stopping:
                self._spawn(slot)

    def _requeue_stale(self) -> list[Trial]:
        """RUNNING trials whose worker stopped beating go back to the queue to resume, unless
        their attempts are spent (then FAILED); a frozen worker's command program is ended."""
        cutoff = time.time() - STALE_SECONDS
        for trial in self.store.list_trials(states=[TrialState.RUNNING]):
            if (trial.heartbeat_at or trial.started_at or 0) < cutoff:
                end_orphan(self.workspace / "checkpoints" / str(trial.id))
                if trial.attempt >= MAX_ATTEMPTS:
                    self._retry_or_fail(trial, "its worker stopped answering (no heartbeat)")
        return self.store.requeue_stale(cutoff)

    def _retry_or_fail(self, trial: Trial, reason: str) -> None:
        key = f"trial.{trial.id}.attempts"
        reasons = [*json.loads(self.store.get_meta(key) or "[]"), f"attempt {trial.attempt}: {reason}"]
        if trial.attempt < MAX_ATTEMPTS:
            self.store.set_meta(key, json.dumps(reasons))
            self.store.set_state([trial.id], TrialState.QUEUED, only_from=[TrialState.RUNNING])
            log.info("trial %s: %s; queued for attempt %d of %d", trial.id, reason, trial.attempt + 1, MAX_ATTEMPTS)
            return
        error = f"{reason}, on each of its {MAX_ATTEMPTS} attempts" if all(
            r.endswith(reason) for r in reasons) else "; ".join(reasons)
        self.store.finish_trials([(trial.id, _failed(trial, error))])

    def _fit_slots(self) -> None:
        """Fail trials this host cannot hold; replan once no trial runs if the studies with
        work left need slots of another width (wider ones, or narrow again when they are done)."""
        widths = wide_studies(self.store)
        self._fail_unfit(widths)
        width = _fitting_width(widths, self.host)
        if width == self.width or self.store.list_trials(states=[TrialState.RUNNING]):
            return
        self._replan(width)

    def _fail_unfit(self, widths: dict[int, int]) -> None:
        """Queued trials needing more GPUs than the host has would wait forever: end them FAILED."""
        for study_id, width in widths.items():
            reason = self.host.problem(width)
            if reason is None:
                continue
            queued = self.store.list_trials(study_id, states=[TrialState.QUEUED])
            done = self.store.finish_trials([(t.id, _failed(t, reason)) for t in queued])
            if done:
                log.warning("study %d: %d trials failed: %s", study_id, len(done), reason)

    def _replan(self, width: int) -> None:
        """Replace the (idle) workers by workers on slots of ``width`` GPUs."""
        old = {slot.name for slot in self.slots}
        paused_before = {t.id for t in self.store.list_trials(states=[TrialState.PAUSED])}
        self._stop_workers()
        # a worker may have claimed a trial just before its stop: that trial goes back to the queue
        caught = [t.id for t in self.store.list_trials(states=[TrialState.PAUSED, TrialState.RUNNING])
                  if t.worker in old and t.id not in paused_before]
        if caught:
            self.store.set_state(caught, TrialState.QUEUED, only_from=[TrialState.PAUSED, TrialState.RUNNING])
        self.slots, self.width, self.workers = self.host.plan(width), width, {}
        log.info("replanned for %d GPUs per trial: %d slots (%s)",
                 width, len(self.slots), ", ".join(s.name for s in self.slots))
        self._spawn_all()

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
        self._stop_workers()
        paused = [t.id for t in self.store.list_trials(states=[TrialState.PAUSED]) if t.id in running_before]
        leftover = [t.id for t in self.store.list_trials(states=[TrialState.RUNNING]) if t.id in running_before]
        if leftover:  # a worker that did not answer in time: its trial resumes from its checkpoint
            self.store.set_state(leftover, TrialState.PAUSED, only_from=[TrialState.RUNNING])
        self.store.set_meta("engine.paused_by_stop", json.dumps(paused + leftover))
        self.store.set_meta("engine.heartbeat", "0")
        log.info("engine stopped; %d trials paused, resumed on next start", len(paused) + len(leftover))

    def _stop_workers(self) -> None:
        """SIGTERM every worker (each checkpoints and pauses its trial); kill those that linger."""
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_TIMEOUT_SECONDS
        for proc in self.workers.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _failed(trial: Trial, reason: str) -> TrialProgress:
    """A trial's end as FAILED with ``reason``, keeping what earlier attempts recorded."""
    return TrialProgress(
        state=TrialState.FAILED, steps_done=trial.steps_done, best_step=trial.best_step,
        best_value=trial.best_value, wall_time=trial.wall_time, error=reason,
    )


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
    host = HostSlots.detect(args.slots_per_gpu, args.cpu_slots)
    engine = Engine(store, workspace, host.plan(), lock, host)
    signal.signal(signal.SIGTERM, engine.request_stop)
    signal.signal(signal.SIGINT, engine.request_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    engine.start()
    engine.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
