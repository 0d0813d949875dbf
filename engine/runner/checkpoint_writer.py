"""Writes checkpoints off the training thread, a batch at a time.

Training only snapshots state (device-side copies); this thread serialises each snapshot,
writes it atomically (temp file, fsync, ``os.replace``) and then records the whole batch in
the workspace in one transaction. While a batch is being written, trials do not queue the
next latest-checkpoint (``busy``), so a group of hundreds of fused trials never waits on the
disk and never piles up snapshots. A batch may carry a callback (``together(then=...)``),
called on this thread once the batch is on disk and recorded: a worker records a fused
group's end that way and trains its next group meanwhile.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.runner.saver import POOL_MIN_JOBS, SaverPool
from engine.store.base import Checkpoint, Storage
from engine.workloads.rowstate import materialize, row_parts

log = logging.getLogger("tuneplay.checkpoints")


@dataclass
class _Job:
    trial_id: int
    kind: str
    step: int
    path: Path
    value: float | None
    state: dict[str, Any]


@dataclass
class _Batch:
    jobs: list[_Job]
    then: Callable[[bool], None] | None = None  # told whether the batch was written


DUTY_CYCLE = 0.2  # background writing may take at most this share of wall time


class CheckpointWriter:
    """One per worker process; ``submit`` is called from the training thread.

    After a batch that took ``t`` seconds the writer reports itself busy for a further
    ``t / DUTY_CYCLE - t``: a group of hundreds of trials then persists less often rather
    than spending its time (and the GIL) serialising checkpoints.
    """

    def __init__(self, store: Storage, pool: SaverPool | None = None) -> None:
        self.store = store
        self.pool = pool
        self._cooldown_until = 0.0
        self._queue: queue.Queue[_Batch] = queue.Queue()
        self._held: list[_Job] | None = None
        self._pending = 0  # batches submitted and not yet written (and called back)
        self._cond = threading.Condition()
        self.seconds: dict[str, float] = {}  # time spent per phase (save, sync, rename, record)
        self.last_batch: dict[str, float] = {}  # the same for the last batch, with its size ("files")
        threading.Thread(target=self._loop, daemon=True, name="checkpoint-writer").start()

    def submit(
        self, trial_id: int, kind: str, step: int, path: Path, value: float | None, state: dict[str, Any],
    ) -> None:
        job = _Job(trial_id, kind, step, path, value, state)
        if self._held is not None:
            self._held.append(job)
            return
        self._put(_Batch([job]))

    @contextmanager
    def together(self, then: Callable[[bool], None] | None = None) -> Iterator[None]:
        """Hand everything submitted inside the block to the writer as one batch (a fused
        group's final checkpoints: one sync, and the savers take them all at once). ``then``
        is called on the writer's thread with True once the batch is on disk and recorded,
        or with False if writing it failed; it is called even for an empty batch."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held or then is not None:
                self._put(_Batch(held, then))

    def _put(self, batch: _Batch) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put(batch)

    def busy(self) -> bool:
        with self._cond:
            return self._pending > 0 or time.monotonic() < self._cooldown_until

    def drain(self, timeout: float = 600.0) -> None:
        """Wait until everything submitted so far is on disk and recorded (and called back)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)

    def _loop(self) -> None:
        while True:
            batches = [self._queue.get()]
            while True:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for batch in batches for job in batch.jobs]
            started = time.monotonic()
            written = True
            if jobs:
                try:
                    self._write(jobs)
                except Exception:
                    written = False
                    log.exception("writing %d checkpoints failed", len(jobs))
            took = time.monotonic() - started
            for batch in batches:
                if batch.then is not None:
                    try:
                        batch.then(written)
                    except Exception:
                        log.exception("recording after a checkpoint batch failed")
            with self._cond:
                self._pending -= len(batches)
                if jobs:
                    self._cooldown_until = time.monotonic() + took * (1 / DUTY_CYCLE - 1)
                self._cond.notify_all()

    def _write(self, batch: list[_Job]) -> None:
        latest: dict[tuple[int, str], _Job] = {}
        for job in batch:  # only the newest state per (trial, kind) matters
            latest[(job.trial_id, job.kind)] = job
        jobs = list(latest.values())
        phases: dict[str, float] = {}
        if len(jobs) == 1:
            jobs[0].path.parent.mkdir(parents=True, exist_ok=True)
            with _timed(phases, "save"):
                atomic_save(jobs[0].state, jobs[0].path)
        else:
            _save_batch(jobs, self.pool, phases)
        now = time.time()
        with _timed(phases, "record"):
            self.store.record_checkpoints([
                Checkpoint(j.trial_id, j.kind, j.step, str(j.path), j.value, now) for j in latest.values()
            ])
        for phase, took in phases.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + took
        self.last_batch = {"files": float(len(jobs)), **phases}


@contextmanager
def _timed(seconds: dict[str, float], phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started


def atomic_save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so a reader sees the old file or the new one, never half."""
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(materialize(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _save_batch(jobs: list[_Job], pool: SaverPool | None = None, seconds: dict[str, float] | None = None) -> None:
    """Write many checkpoints with one filesystem sync instead of one fsync each; a fused
    group's row checkpoints go to the saver processes when there are enough of them."""
    import torch

    seconds = {} if seconds is None else seconds
    started = time.perf_counter()
    tmps = [job.path.with_name(f".{job.path.name}.{os.getpid()}.{threading.get_ident()}.tmp") for job in jobs]
    by_pool = [i for i, job in enumerate(jobs) if row_parts(job.state)]
    if pool is None or not pool.ready or len(by_pool) < POOL_MIN_JOBS:
        if pool is not None and pool.usable and len(by_pool) >= POOL_MIN_JOBS:
            log.info("checkpoint savers still starting: saving %d checkpoints in-process", len(by_pool))
        by_pool = []
    if by_pool:
        try:
            assert pool is not None
            pool.write([(tmps[i], jobs[i].state) for i in by_pool])
        except Exception:
            log.exception("the checkpoint savers failed; saving in-process from now on")
            pool.broken = True  # type: ignore[union-attr]
            by_pool = []
    pooled = set(by_pool)
    for i, (job, tmp) in enumerate(zip(jobs, tmps)):
        if i in pooled:
            continue
        job.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(materialize(job.state), fh)
    seconds["save"] = seconds.get("save", 0.0) + time.perf_counter() - started
    with _timed(seconds, "sync"):
        if not _syncfs(jobs[0].path.parent):
            for tmp in tmps:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
    with _timed(seconds, "rename"):
        for tmp, job in zip(tmps, jobs):
            os.replace(tmp, job.path)


def remove_orphans(checkpoints: Path) -> int:
    """Delete what a killed worker left half-written under ``checkpoints``: temp checkpoint
    files (``.NAME.PID.TID.tmp``) and saver spill files (``.rows-PID-*.bin``) of processes
    that no longer exist. Returns how many were removed."""
    removed = 0
    candidates = [*checkpoints.glob(".rows-*.bin"), *checkpoints.glob("*/.*.tmp"),
                  *checkpoints.glob("*/a*/.*.tmp")]  # a trial's files live in its attempt's folder
    for path in candidates:
        parts = path.name.split("-") if path.suffix == ".bin" else path.name.split(".")
        pid_text = parts[1] if path.suffix == ".bin" else (parts[-3] if len(parts) >= 4 else "")
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _syncfs(folder: Path) -> bool:
    """Flush the filesystem holding ``folder`` (Linux ``syncfs``); False where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            return libc.syncfs(fd) == 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return False
