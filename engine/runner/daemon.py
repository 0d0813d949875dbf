"""The engine daemon: one per workspace, detached from the terminal that started it.

It holds an exclusive lock on ``<workspace>/engine.lock`` (so only one engine serves a
workspace), keeps one warm worker process per slot, replaces workers that die (the trial a
dead worker held resumes from its checkpoint, FAILED with every attempt's reason once
MAX_ATTEMPTS are spent) or hang (a worker whose trial stopped beating, or that was stopped
by a signal, is killed and replaced), ends command programs a dead worker left running,
resumes trials whose heartbeat went stale, tops up Bayesian studies as results arrive, and
on SIGTERM asks every worker to checkpoint and leave its trial PAUSED, to be resumed by the
next engine.

A full disk does not end it: while the workspace's disk is full no trial is claimed (the
store refuses claims), the engine's own bookkeeping waits, and everything carries on once
there is room. Other store errors are logged and retried; a database the store refuses
(empty, another schema) is refused at start, saying why in the engine log.

The lock is a POSIX record lock (``fcntl.lockf``): anyone can ask the kernel who holds it
(``F_GETLK``) without taking it, so ``engine status`` never disturbs a starting engine, and
the answer names the holder's pid, never a stale one from a file. ``engine.pid`` (written
atomically) says the same for people and for pid namespaces where the kernel cannot.

Slots are as wide as the widest study with work left needs (``gpus_per_trial``): when queued
trials need other slots, the engine waits until no trial runs (workers stop claiming once
the oldest queued trial is too wide for them), then replaces its workers. Trials needing more
GPUs than the host has end FAILED at once, saying why, instead of waiting forever.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.runner.checkpoint_writer import remove_orphans
from engine.runner.command import HOST_ENV, end_orphan, end_orphans
from engine.runner.hosts import HOST_BEAT_SECONDS, SHARED_LEASE_SECONDS, check_shared_folder, places
from engine.runner.lock import EngineLock, engine_pid, is_engine_process  # noqa: F401 (re-exported)
from engine.runner.slots import HostSlots, Slot, fitting_width, wide_studies
from engine.store import DiskFullError, connect, disk_full, is_shared, redact_url, store_url
from engine.store.base import Storage, StoreError, Trial, TrialProgress, TrialState

STALE_SECONDS = 5.0  # a live worker beats every second
LOOP_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3  # a trial whose worker dies or freezes this often is FAILED, not retried
FIT_SECONDS = 1.0  # how often the engine checks that its slots fit the studies with work left
STORE_RETRY_SECONDS = 2.0  # how often a store that cannot be opened (disk full) is tried again
log = logging.getLogger("tuneplay.engine")


class Engine:
    """Supervises workers for one workspace.

    ``host`` says how to plan slots of another width; without it, the engine replans from
    what ``slots`` show of the host (their GPUs, or their number of CPU slots).
    """

    def __init__(
        self, store: Storage, workspace: Path, slots: Sequence[Slot], lock: EngineLock | None = None,
        host: HostSlots | None = None, *, name: str = "", lease_seconds: float = STALE_SECONDS,
        url: str | None = None, runtime: Path | None = None, exit_when_idle: float | None = None,
    ) -> None:
        self.lock = lock
        self.store = store
        self.workspace = workspace
        self.name = name  # this engine's host name ("" for the one engine of a SQLite workspace)
        self.lease_seconds = lease_seconds
        self.url = url  # the shared store's URL (None: the workspace's SQLite)
        self.runtime = runtime or workspace  # this host's lock, pid file and logs
        self.exit_when_idle = exit_when_idle
        self.coordinator = not is_shared(url)  # a SQLite workspace has one engine: it coordinates
        self._idle_since: float | None = None
        self._host_beat_at = 0.0
        self._unfit_noted: set[int] = set()
        self.slots = list(slots)
        self.host = host if host is not None else HostSlots.holding(self.slots)
        self.width = max((s.width for s in self.slots), default=1)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.settled = False  # the start's bookkeeping is done (it waits while the disk is full)
        self.disk_full: str | None = None  # why the disk counts as full, while it does
        self._beats_trusted_at = 0.0  # heartbeats could not be written before this time
        self._stopped_since: dict[str, float] = {}  # slot -> when its worker was seen stopped
        self._spawned_at: dict[str, float] = {}  # slot -> when its worker started
        self._last_error = ""

    def start(self) -> None:
        if not is_shared(self.url):  # on a shared folder, another host's pids mean nothing here
            orphans = remove_orphans(self.workspace / "checkpoints")
            if orphans:
                log.info("removed %d half-written checkpoint files of killed workers", orphans)
        ended = end_orphans(self.workspace / "checkpoints", self.name)
        if ended:
            log.info("ended %d command programs left running by killed workers", len(ended))
        self._guarded(self._settle)
        self._spawn_all()

    def _settle(self) -> None:
        """Resume what the last engine left (stale and paused trials) and plan the slots."""
        resumed = self._requeue_stale()
        paused = self._resume_paused()
        widths = wide_studies(self.store)
        self._fail_unfit(widths)
        width = fitting_width(widths, self.host)
        if width != self.width and not self.workers:  # no worker yet: just plan other slots
            self.slots, self.width = self.host.plan(width), width
        self.settled = True
        log.info("engine up: %d slots (%s); resumed %d stale and %d paused trials",
                 len(self.slots), ", ".join(s.name for s in self.slots), len(resumed), paused)

    def _spawn_all(self) -> None:
        self._guarded(lambda: self.store.set_meta("engine.slots", json.dumps([s.name for s in self.slots])))
        for slot in self.slots:
            self._spawn(slot)

    def _resume_paused(self) -> int:
        key = "engine.paused_by_stop"  # a shared store's hosts hand their trials back instead
        raw = self.store.get_meta(key)
        ids = json.loads(raw) if raw else []
        resumed = self.store.set_state(ids, TrialState.QUEUED, only_from=[TrialState.PAUSED]) if ids else 0
        self.store.set_meta(key, "[]")  # after: a failed write is retried whole
        return resumed

    def _mine(self, trials: list[Trial]) -> list[Trial]:
        """The trials this host's workers hold under a lease (each host's slots share names:
        cpu0, gpu0); trials asked for outside any engine (ask/tell) hold none."""
        return [t for t in trials if t.host == self.name and t.lease_token]

    def _spawn(self, slot: Slot) -> None:
        """Start the slot's worker; if it cannot start now, ``_reap`` tries again."""
        env = {**os.environ, **dict(slot.env), "OMP_NUM_THREADS": str(slot.threads), "PYTHONUNBUFFERED": "1",
               HOST_ENV: self.name}
        log_path = self.runtime / "logs" / f"worker-{slot.name}.log"
        self._spawned_at[slot.name] = time.time()
        argv = [sys.executable, "-m", "engine.runner.worker", "--workspace", str(self.workspace),
                "--name", slot.name, "--device", slot.device, "--label", slot.label,
                "--threads", str(slot.threads), "--host", self.name, "--lease", str(self.lease_seconds)]
        if self.url:
            argv += ["--store", self.url]
        try:
            log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(log_path, "ab") as log_fh:
                proc = subprocess.Popen(
                    argv,
                    env=env, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                )
        except OSError as exc:  # no room for its log, no memory for a process: later
            log.error("could not start worker %s: %s", slot.name, exc)
            return
        self.workers[slot.name] = proc

    def loop(self) -> None:
        last_stale_check = last_fit = 0.0
        while not self.stopping:
            if self.lock is not None and not self.lock.still_ours():
                log.error("the workspace %s was removed or replaced; stopping", self.workspace)
                self.stopping = True
                break
            self._beat()
            if not self.settled:
                self._guarded(self._settle)
            self._guarded(self._reap)
            if time.time() - last_stale_check > 1.0:
                self._guarded(self._check_stale)
                last_stale_check = time.time()
            if time.time() - self._host_beat_at > HOST_BEAT_SECONDS:
                self._guarded(self._beat_host)
            if self.coordinator and not self.disk_full:  # only one process creates trials
                self._top_up_bayesian()
            if time.time() - last_fit > FIT_SECONDS:  # after the top-up: its new trials count
                self._guarded(self._fit_slots)
                last_fit = time.time()
                self._guarded(self._check_idle)
            time.sleep(LOOP_SECONDS)
        self._shutdown()

    def _beat_host(self) -> None:
        """On a shared store: keep (or win) the coordinator's lock, and refresh this host's
        record (its slots, by the store's clock) that ``status`` and the app count hosts by."""
        self._host_beat_at = time.time()
        if not is_shared(self.url):
            return
        was = self.coordinator
        self.coordinator = self.store.is_coordinator() or self.store.try_coordinator()  # type: ignore[attr-defined]
        if self.coordinator != was:
            log.info("this host %s the coordinator (it creates trials: top-ups, searches)",
                     "is now" if self.coordinator else "is no longer")
        record = {"slots": [s.name for s in self.slots], "at": self.store.db_time(), "pid": os.getpid(),
                  "machine": socket.gethostname(), "coordinator": self.coordinator,
                  "lease": self.lease_seconds}
        self.store.set_meta(f"engine.host.{self.name}", json.dumps(record))

    def _check_idle(self) -> None:
        """With ``exit_when_idle``: stop once nothing is queued, paused or running here for that
        long (a Slurm task then releases its allocation)."""
        if self.exit_when_idle is None:
            return
        busy = self.store.has_queued() or self._mine(self.store.list_trials(states=[TrialState.RUNNING]))
        if busy:
            self._idle_since = None
            return
        now = time.time()
        self._idle_since = self._idle_since or now
        if now - self._idle_since >= self.exit_when_idle:
            log.info("the queue has been empty for %.0f s; stopping (--exit-when-idle)", now - self._idle_since)
            self.stopping = True

    def _guarded(self, step: Callable[[], object]) -> None:
        """Run one step of the loop; a store error (a full disk, a database gone bad) is
        logged, once per kind, and the step is tried again on a later round."""
        try:
            step()
        except DiskFullError as exc:
            self._note_disk(str(exc))
        except StoreError as exc:
            self._log_store_error(exc)

    def _log_store_error(self, exc: StoreError) -> None:
        if str(exc) != self._last_error:  # once, not five times a second
            log.error("workspace store error (tried again): %s", exc)
            self._last_error = str(exc)

    def _beat(self) -> None:
        """Record the engine's heartbeat, and whether the disk is full: by its free space, or
        by the heartbeat itself failing for lack of room."""
        full = disk_full(self.workspace)
        try:
            if not is_shared(self.url):  # hosts of a shared store keep records of their own
                self.store.set_meta("engine.heartbeat", str(time.time()))
        except DiskFullError as exc:
            full = full or str(exc)
        except StoreError as exc:
            self._log_store_error(exc)
        self._note_disk(full)

    def _note_disk(self, reason: str | None) -> None:
        """Track whether the disk is full. Heartbeats cannot be written meanwhile, so trials
        are not judged stale until workers have had STALE_SECONDS to beat again."""
        if reason:
            if not self.disk_full:
                log.warning("%s; no trial is claimed until there is room", reason)
            self.disk_full = reason
            self._beats_trusted_at = time.time() + STALE_SECONDS
        elif self.disk_full:
            self.disk_full = None
            log.info("the disk has room again; trials are claimed again")

    def _check_stale(self) -> None:
        if self.disk_full or time.time() < self._beats_trusted_at:
            return
        self._kill_stopped_workers()
        for trial in self._requeue_stale():
            log.info("trial %s: heartbeat went stale; requeued to resume", trial.id)

    def _reap(self) -> None:
        """Replace dead workers. A trial a worker held when it died is tried again from its
        last checkpoint (the program a command trial left running is ended first); after
        MAX_ATTEMPTS attempts it is FAILED, each attempt's reason in its error."""
        for slot in self.slots:
            if slot.name not in self.workers:  # it could not be started: try again
                if not self.stopping:
                    self._spawn(slot)
                continue
            proc = self.workers[slot.name]
            if proc is None or proc.poll() is None:
                continue
            reason = _exit_reason(proc.returncode)
            log.warning("worker %s %s; restarting it", slot.name, reason)
            for trial in self._mine(self.store.list_trials(states=[TrialState.RUNNING])):
                if trial.worker == slot.name:
                    end_orphan(self.workspace / "checkpoints" / str(trial.id), self.name)
                    self._retry_or_fail(trial, f"worker {reason} during the trial")
            if not self.stopping:
                self._spawn(slot)

    def _requeue_stale(self) -> list[Trial]:
        """RUNNING trials whose lease expired (their worker stopped renewing it: frozen, dead
        with its host, cut off from the store) go back to the queue to resume from their last
        recorded checkpoint, unless their attempts are spent (then FAILED). Any engine may do
        this for any host: the requeue is fenced by the expired token, and the old holder's
        later writes are refused. A frozen worker of this host is killed first (``_reap``
        replaces it) and its command program ended."""
        expired = self.store.expired_leases()
        if not expired:
            return []
        mine = self._mine(expired)
        running = self._mine(self.store.list_trials(states=[TrialState.RUNNING]))
        self._kill_workers(self._hung(running, mine), "its trial's lease expired")
        requeued = []
        for trial in expired:
            if trial.host == self.name:
                end_orphan(self.workspace / "checkpoints" / str(trial.id), self.name)
            where = f" on host {trial.host}" if trial.host and trial.host != self.name else ""
            if self._retry_or_fail(trial, f"its worker{where} stopped renewing its lease"):
                requeued.append(trial)
        return requeued

    def _hung(self, running: list[Trial], stale: list[Trial]) -> set[str]:
        """Workers that claimed a now stale trial themselves and beat for none of their trials.
        A stale trial left by the last engine (or by a worker since replaced) names the slot
        of the worker there now; one a live worker gave up on (its end could not be recorded)
        sits beside the fresh trial it trains now."""
        stale_ids = {t.id for t in stale}
        beating = {t.worker for t in running if t.id not in stale_ids}
        return {t.worker for t in stale if t.worker not in beating
                and (t.started_at or 0) >= self._spawned_at.get(t.worker, time.time())}

    def _kill_stopped_workers(self) -> None:
        """A worker stopped by a signal (SIGSTOP, SIGTSTP) for STALE_SECONDS, even an idle one
        that holds no trial to go stale, is hung as far as its slot is concerned."""
        now, stopped = time.time(), set()
        for name, proc in self.workers.items():
            if proc is not None and proc.poll() is None and _process_state(proc.pid) == "T":
                since = self._stopped_since.setdefault(name, now)
                if now - since >= STALE_SECONDS:
                    stopped.add(name)
            else:
                self._stopped_since.pop(name, None)
        self._kill_workers(stopped, "it was stopped by a signal")

    def _kill_workers(self, names: set[str], why: str) -> None:
        """SIGKILL the named live workers and wait for them; ``_reap`` starts new ones."""
        for name in sorted(names):
            proc = self.workers.get(name)
            if proc is None or proc.poll() is not None:
                continue
            log.warning("worker %s (pid %d) is hung (%s); killing it to free its slot", name, proc.pid, why)
            proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("worker %s (pid %d) did not die after SIGKILL", name, proc.pid)
            self._stopped_since.pop(name, None)

    def _retry_or_fail(self, trial: Trial, reason: str) -> bool:
        """Requeue ``trial`` (as it was seen: a new claim meanwhile is left alone), or end it
        FAILED once its attempts are spent. True when it was requeued."""
        key = f"trial.{trial.id}.attempts"
        reasons = [*json.loads(self.store.get_meta(key) or "[]"), f"attempt {trial.attempt}: {reason}"]
        lease = {trial.id: trial.lease_token} if trial.lease_token else None
        if trial.attempt < MAX_ATTEMPTS:
            self.store.set_meta(key, json.dumps(reasons))
            moved = self.store.set_state([trial.id], TrialState.QUEUED, only_from=[TrialState.RUNNING], leases=lease)
            if moved:
                log.info("trial %s: %s; queued for attempt %d of %d", trial.id, reason, trial.attempt + 1, MAX_ATTEMPTS)
            return bool(moved)
        error = f"{reason}, on each of its {MAX_ATTEMPTS} attempts" if all(
            r.endswith(reason) for r in reasons) else "; ".join(reasons)
        self.store.finish_trials([(trial.id, _failed(trial, error))], leases=lease)
        return False

    def _fit_slots(self) -> None:
        """Fail trials this host cannot hold; replan once no trial runs if the studies with
        work left need slots of another width (wider ones, or narrow again when they are done)."""
        widths = wide_studies(self.store)
        self._fail_unfit(widths)
        width = fitting_width(widths, self.host)
        if width == self.width or self._mine(self.store.list_trials(states=[TrialState.RUNNING])):
            return
        self._replan(width)

    def _fail_unfit(self, widths: dict[int, int]) -> None:
        """Queued trials needing more GPUs than the host has would wait forever: end them FAILED.
        On a shared store another host may have the GPUs: they are left to it."""
        for study_id, width in widths.items():
            reason = self.host.problem(width)
            if reason is None:
                continue
            if is_shared(self.url):
                if study_id not in self._unfit_noted:
                    log.warning("study %d: %s; its trials are left to hosts that have the GPUs", study_id, reason)
                    self._unfit_noted.add(study_id)
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
        caught = [t.id for t in self._mine(self.store.list_trials(states=[TrialState.PAUSED, TrialState.RUNNING]))
                  if t.worker in old and t.id not in paused_before]
        if caught:
            self.store.set_state(caught, TrialState.QUEUED, only_from=[TrialState.PAUSED, TrialState.RUNNING])
        self.slots, self.width, self.workers = self.host.plan(width), width, {}
        log.info("replanned for %d GPUs per trial: %d slots (%s)",
                 width, len(self.slots), ", ".join(s.name for s in self.slots))
        self._spawn_all()

    def _top_up_bayesian(self) -> None:
        """Store the trials Bayesian studies proposed ahead for the slots free now, and start
        computing the next ones in a background thread (:mod:`engine.runner.suggest`): the
        loop never waits on a GP fit. Quasi-random studies registered by ``tuneplay create``
        get their missing points here too."""
        from engine.runner.suggest import Suggester

        suggester = getattr(self, "_suggester", None)
        if suggester is None or suggester.store is not self.store:
            suggester = Suggester(self.store)
            setattr(self, "_suggester", suggester)  # noqa: B010 (created on first use)
        try:
            suggester.step(len(self.slots))
        except Exception:
            log.exception("bayesian top-up failed")

    def request_stop(self, *_: Any) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        """Ask workers to checkpoint and stop; their running trials are left PAUSED. When the
        store cannot record that (a full disk), they stay RUNNING with a stale heartbeat, and
        the next engine resumes them all the same."""
        try:
            running_before = {t.id for t in self._mine(self.store.list_trials(states=[TrialState.RUNNING]))}
        except StoreError as exc:
            log.error("could not list the running trials before stopping: %s", exc)
            running_before = set()
        self._stop_workers()
        try:
            self._record_stop(running_before)
        except StoreError as exc:
            log.error("engine stopped; could not record which trials it paused (%s): the next "
                      "engine resumes them from their checkpoints once their heartbeats are stale", exc)

    def _record_stop(self, running_before: set[int]) -> None:
        paused = [t.id for t in self.store.list_trials(states=[TrialState.PAUSED]) if t.id in running_before]
        leftover = [t.id for t in self.store.list_trials(states=[TrialState.RUNNING]) if t.id in running_before]
        if leftover:  # a worker that did not answer in time: its trial resumes from its checkpoint
            self.store.set_state(leftover, TrialState.PAUSED, only_from=[TrialState.RUNNING])
        if is_shared(self.url):  # a host leaving (its allocation ends): the others carry on
            handed = self.store.set_state(paused + leftover, TrialState.QUEUED, only_from=[TrialState.PAUSED])
            self.store.delete_meta(f"engine.host.{self.name}")
            if self.coordinator:
                self.store.release_coordinator()  # type: ignore[attr-defined]
            log.info("engine host %s stopped; %d trials handed back to the queue", self.name, handed)
            return
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


def _process_state(pid: int) -> str:
    """The state letter /proc gives ``pid`` (R, S, D, T, Z, ...; "" when unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 1:].split()  # after the command name, which may hold spaces
    return fields[0] if fields else ""


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneplay-engine")
    parser.add_argument("--workspace", default=None,
                        help="the workspace folder (with a shared store: the shared folder)")
    parser.add_argument("--slots-per-gpu", type=int, default=1)
    parser.add_argument("--cpu-slots", type=int, default=None)
    parser.add_argument("--store", default=None,
                        help="store URL (default: $TUNEPLAY_STORE, else the workspace's SQLite)")
    parser.add_argument("--checkpoints", default=None,
                        help="with a shared store: the folder every host shares ($TUNEPLAY_CHECKPOINTS)")
    parser.add_argument("--host", default=None, help="this engine's host name (default: the hostname)")
    parser.add_argument("--lease", type=float, default=None,
                        help=f"seconds a claim holds a trial without renewal (default {SHARED_LEASE_SECONDS:.0f} "
                             f"with a shared store, {STALE_SECONDS:.0f} with SQLite)")
    parser.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                        help="stop once nothing has been queued or running here for this long")
    parser.add_argument("--runtime", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.umask(0o077)  # workspace files are the owner's alone
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    url = store_url(args.store)
    try:
        workspace, name, runtime = places(args, url)
    except StoreError as exc:
        log.error("%s", exc)
        return 2
    try:  # before the lock: an engine that refuses its database never looks like it serves
        store: Storage | None = connect(url, workspace)
        if is_shared(url):
            check_shared_folder(store, workspace)  # type: ignore[arg-type]
    except DiskFullError:
        store = None  # opened once there is room, holding the lock meanwhile
    except StoreError as exc:
        log.error("refusing to serve %s: %s", redact_url(url) if url else workspace, exc)
        return 2
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = EngineLock(runtime)
    if not lock.acquire():
        log.error("another engine already serves %s%s", workspace, f" as host {name}" if url else "")
        return 1
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    store = store or _open_when_there_is_room(url, workspace, stop)
    if store is None:
        return 0
    host = HostSlots.detect(args.slots_per_gpu, args.cpu_slots)
    lease = args.lease if args.lease is not None else (SHARED_LEASE_SECONDS if is_shared(url) else STALE_SECONDS)
    engine = Engine(store, workspace, host.plan(), lock, host, name=name, lease_seconds=lease, url=url,
                    runtime=runtime, exit_when_idle=args.exit_when_idle)
    if is_shared(url):
        log.info("engine host %s serving %s (lease %.0f s, shared folder %s)", name, redact_url(url or ""), lease,
                 workspace)
    engine.stopping = stop.requested
    signal.signal(signal.SIGTERM, engine.request_stop)
    signal.signal(signal.SIGINT, engine.request_stop)
    engine.start()
    engine.loop()
    return 0


class _StopFlag:
    """A SIGTERM before the engine exists (while it waits for the disk)."""

    requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


def _open_when_there_is_room(url: str | None, workspace: Path, stop: _StopFlag) -> Storage | None:
    """Open the store once the disk has room for it (None if asked to stop meanwhile)."""
    warned = False
    while not stop.requested:
        try:
            return connect(url, workspace)
        except DiskFullError as exc:
            if not warned:
                log.warning("%s; the engine starts serving once there is room", exc)
                warned = True
        time.sleep(STORE_RETRY_SECONDS)
    return None


if __name__ == "__main__":
    sys.exit(main())
