"""Checkpoint serialisation for the rows of a fused group, in helper processes.

``torch.save`` is Python work under the GIL, about 0.4 ms a file: at the end of a fused group
of 512 trials, writing every trial's best checkpoint held the training process for 0.2-0.3 s,
a third of the group's whole run on a GPU. A fused trainer hands its trials' final weights
over as :class:`RowState` objects, rows of one stacked host tensor, instead of K state dicts.
The checkpoint writer then spills that tensor to a file once (one large write, outside the
GIL) and :class:`SaverPool` processes cut each trial's row from it and ``torch.save`` it in
the unfused format, in parallel. Without spare cores (``processes = 0``), for a small batch,
or if anything about the pool fails, the writer builds the dicts and saves them itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from engine.workloads.rowstate import RowState

log = logging.getLogger("tuneplay.saver")

POOL_MIN_JOBS = 32  # fewer files than this are quicker to save in-thread than to hand over
MAX_PROCESSES = 8


def savers_for(device: str, threads: int) -> int:
    """Saver processes for a worker: spare cores only (a GPU worker's share of the CPU
    beyond what it trains with); none for a CPU worker, whose cores train."""
    if not device.startswith("cuda"):
        return 0
    return max(0, min(MAX_PROCESSES, threads - 2))


class SaverPool:
    """``processes`` spawned helpers that write row checkpoints; started (torch imported)
    in the background by :meth:`prewarm`, so the first group does not wait for them."""

    def __init__(self, processes: int, spill_dir: Path) -> None:
        self.processes = max(0, min(MAX_PROCESSES, processes))
        self.spill_dir = spill_dir
        self._pool: ProcessPoolExecutor | None = None
        self._started: Any = None  # a shared count of savers through their initializer
        self._prewarmed = False
        self.broken = False
        self.files_written = 0

    @property
    def usable(self) -> bool:
        return self.processes > 0 and not self.broken

    @property
    def ready(self) -> bool:
        """Usable, and (when prewarmed) every saver has started: a batch never waits for
        savers still importing torch; it is saved in-thread instead. Without a prewarm the
        pool starts on first use and is waited for."""
        if not self.usable:
            return False
        if not self._prewarmed:
            return True
        return self._started is not None and self._started.value >= self.processes

    def prewarm(self) -> None:
        """Start every saver now (spawn, import torch) without waiting for them."""
        if not self.usable:
            return
        try:
            pool = self._executor()
            for _ in range(self.processes):  # one task each: the executor spawns them all
                pool.submit(_ready)
            self._prewarmed = True
            threading.Thread(target=self._announce, daemon=True, name="savers-ready").start()
        except Exception:
            log.exception("starting the checkpoint savers failed; saving in-process")
            self.broken = True

    def _announce(self, timeout: float = 300.0) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout and self.usable:
            if self.ready:
                log.info("%d checkpoint savers ready after %.1f s", self.processes, time.monotonic() - started)
                return
            time.sleep(0.05)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            self._started = context.Value("i", 0)
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=context, initializer=_init, initargs=(self._started,)
            )
        return self._pool

    def write(self, jobs: Sequence[tuple[Path, Mapping[str, Any]]]) -> None:
        """Write each ``(temp path, state)``; a state's :class:`RowState` values are rows of
        host tensors. The jobs are cut into one chunk per process; each chunk's rows are
        spilled to a file of their own and handed over at once, so spilling the next chunk
        overlaps the savers' work on the last. Raises on any failure (the caller then
        saves in-thread)."""
        started = time.monotonic()
        chunk = -(-len(jobs) // max(1, self.processes))
        futures: list[Future[int]] = []
        spills: list[str] = []
        try:
            for first in range(0, len(jobs), chunk):
                part = jobs[first : first + chunk]
                wire, sources, recipes = _wire(part)
                files = {key: self._spill(tensor) for key, tensor in sources.items()}
                spills += [path for path, _, _ in files.values()]
                futures.append(self._executor().submit(_write_chunk, files, recipes, wire))
            written = sum(f.result(timeout=600) for f in futures)
            if written != len(jobs):
                raise RuntimeError(f"the savers wrote {written} of {len(jobs)} checkpoints")
            self.files_written += written
            log.info("savers wrote %d checkpoints in %.3f s", written, time.monotonic() - started)
        finally:
            for future in futures:
                future.cancel()
            for spill in spills:
                Path(spill).unlink(missing_ok=True)

    def _spill(self, tensor: Any) -> tuple[str, str, tuple[int, ...]]:
        """Write ``tensor``'s bytes to a file once (a plain write: no GIL held meanwhile)."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f".rows-{os.getpid()}-{uuid.uuid4().hex}.bin"
        data = tensor.detach().contiguous()
        with open(path, "wb") as fh:
            fh.write(memoryview(data.numpy()).cast("B"))
        return str(path), str(data.dtype).removeprefix("torch."), tuple(data.shape)

    def close(self, wait: bool = False) -> None:
        """Stop the savers (they finish what they hold first when ``wait``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


# A job on the wire: (temp path, key order, plain values, {key: (((source, position), ...), recipe key)})
Wire = list[tuple[str, list[str], dict[str, Any], dict[str, tuple[tuple[tuple[int, int], ...], int]]]]


def _wire(
    jobs: Sequence[tuple[Path, Mapping[str, Any]]],
) -> tuple[Wire, dict[int, Any], dict[int, Any]]:
    """The jobs as small picklable tuples, and the rows they read gathered per source:
    ``(wire, {source key: tensor of just those rows}, {recipe key: recipe})``."""
    import torch

    wanted: dict[int, set[int]] = {}
    tensors: dict[int, Any] = {}
    for _, state in jobs:
        for value in state.values():
            if isinstance(value, RowState):
                for source in value.sources:
                    tensors[id(source)] = source
                    wanted.setdefault(id(source), set()).add(value.row)
    position: dict[int, dict[int, int]] = {}
    sources: dict[int, Any] = {}
    for key, rows in wanted.items():
        unique = sorted(rows)
        position[key] = {row: i for i, row in enumerate(unique)}
        lo, hi = unique[0], unique[-1] + 1
        source = tensors[key]
        if hi - lo == len(unique):  # a contiguous block (a group's trials, in order): a view
            sources[key] = source[lo:hi]
        else:
            sources[key] = source.index_select(0, torch.tensor(unique))
    recipes: dict[int, Any] = {}
    wire: Wire = []
    for path, state in jobs:
        rows_of: dict[str, tuple[tuple[tuple[int, int], ...], int]] = {}
        plain: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, RowState):
                recipes.setdefault(id(value.recipe), value.recipe)
                refs = tuple((id(s), position[id(s)][value.row]) for s in value.sources)
                rows_of[name] = (refs, id(value.recipe))
            else:
                plain[name] = value
        wire.append((str(path), list(state), plain, rows_of))
    return wire, sources, recipes


# -- in the helper processes ---------------------------------------------------------------


def _init(started: Any) -> None:
    import ctypes
    import signal

    try:  # die with the worker that started us
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.umask(0o077)
    import torch

    torch.set_num_threads(1)
    with started.get_lock():
        started.value += 1


def _ready() -> int:
    return os.getpid()


def _write_chunk(
    spills: Mapping[int, tuple[str, str, tuple[int, ...]]],
    recipes: Mapping[int, Any],
    jobs: Wire,
) -> int:
    import numpy as np
    import torch

    tensors = {  # copy-on-write maps: read-only in effect, without numpy's read-only warning
        key: torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", shape=shape))
        for key, (path, dtype, shape) in spills.items()
    }
    for path, order, plain, rows in jobs:
        parts = dict(plain)
        for key, (refs, recipe) in rows.items():
            parts[key] = recipes[recipe].build([tensors[s][p].clone() for s, p in refs])
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            torch.save({key: parts[key] for key in order}, fh)
    return len(jobs)
