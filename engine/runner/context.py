"""The trial API a workload writes against, as the worker process provides it.

Reporting is buffered (a list append and a comparison per call) and flushed to the
workspace in batches. Checkpoints are captured in memory when needed (a new best, or the
persist interval has passed) and written atomically: temp file, fsync, ``os.replace``,
then recorded in the database, so the best checkpoint is selected retrospectively without
paying a disk write at every evaluation.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.kinds import Mode
from engine.runner.checkpoint_writer import CheckpointWriter, atomic_save
from engine.store.base import Checkpoint, MetricRow, Storage, Trial

FLUSH_SECONDS = 0.5
log = logging.getLogger("tuneplay.trial")
PERSIST_SECONDS = float(os.environ.get("TUNEPLAY_CHECKPOINT_INTERVAL", "2.0"))
FIRST_PERSIST_SECONDS = 0.5  # a trial's first latest-checkpoint, so a kill loses little


class MetricBuffer:
    """Metric rows waiting to be written; shared by a fused group so it flushes once, not K times."""

    def __init__(self) -> None:
        self.rows: list[MetricRow] = []
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()
        # a fused group saves its latest checkpoints together: the first member offered at a
        # step decides for the whole group, so no member starves while the writer is busy
        self.persist_step: int | None = None
        self.persist_due = False

    def flush(self, store: Storage) -> None:
        with self.lock:
            rows, self.rows = self.rows, []
        if rows:
            try:
                store.write_metrics(rows)
            except Exception:  # a full disk, say: the rows wait for the next flush
                with self.lock:
                    self.rows[:0] = rows
                raise
        self.last_flush = time.monotonic()


class WorkloadFailed(RuntimeError):
    """A trial's failure the engine diagnosed (an exit code, no metric reported): its
    message is the whole story, shown without an exception's class name."""


class StopReason:
    NONE = ""
    PAUSE = "pause"  # the engine is stopping: checkpoint and leave the trial PAUSED
    CANCEL = "cancel"  # the user cancelled the trial
    LOST = "lost"  # the lease expired and the trial went to another worker: record nothing
    DIVERGED = "diverged"


class TrialContext:
    """One trial's view of the engine: ``report``, ``checkpoint``, ``restore``, ``should_stop``.

    Attributes:
        trial_id, seed, max_train_steps, eval_every, device, gpus, params: what the workload
        needs (``gpus``: how many GPUs the trial has, 0 on a CPU).
    """

    def __init__(
        self, store: Storage, trial: Trial, metric: str, mode: str, eval_every: int,
        checkpoint_dir: Path, device: str, writer: CheckpointWriter | None = None,
        metrics: MetricBuffer | None = None, first_persist: float = FIRST_PERSIST_SECONDS,
        gpus: int = 0,
    ) -> None:
        self.store = store
        self.writer = writer
        self.trial_id = trial.id
        self.attempt = trial.attempt
        self.seed = trial.seed
        self.max_train_steps = trial.max_train_steps
        self.eval_every = eval_every
        self.device = device
        self.gpus = gpus  # GPUs the trial may use (0 on a CPU): torchrun --nproc_per_node
        self.params = dict(trial.params)
        self.metric, self.mode = metric, Mode(mode)
        self.checkpoint_dir = checkpoint_dir
        self.stop_reason = StopReason.NONE
        self.diverged_at: tuple[int, str, float] | None = None
        self.best_step: int | None = trial.best_step
        self.best_value: float | None = trial.best_value
        self.last_step = -1
        self.resumed_from = 0
        self._group = metrics is not None  # a member of a fused group sharing one buffer
        self._metrics = metrics or MetricBuffer()
        self._last_persist: float | None = None
        self._created = time.monotonic()
        self._first_persist = first_persist
        self._best_snapshot: tuple[int, dict[str, Any]] | None = None
        self._best_dirty = False
        self._new_best_step: int | None = None

    # -- reporting -------------------------------------------------------------------
    def report(self, step: int, **metrics: float) -> None:
        """Record metric values at ``step``; non-finite values end the trial as DIVERGED."""
        step = int(step)
        rows = self._metrics.rows
        for name, value in metrics.items():
            value = float(value)
            rows.append(MetricRow(self.trial_id, step, name, value))
            if not math.isfinite(value) and self.diverged_at is None:
                self.diverged_at = (step, name, value)
                self.stop_reason = StopReason.DIVERGED
            elif name == self.metric and self._better(value):
                self.best_step, self.best_value = step, value
                self._new_best_step = step
        self.last_step = max(self.last_step, step)
        if time.monotonic() - self._metrics.last_flush > FLUSH_SECONDS:
            self.flush()

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return self.mode.better(value, self.best_value)

    def flush(self) -> None:
        """Write buffered metric rows to the workspace (the whole group's, when shared)."""
        self._metrics.flush(self.store)

    # -- stopping --------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True when the trial should return now (engine stop, cancel, or divergence)."""
        return bool(self.stop_reason)

    def request_stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason

    # -- checkpoints -----------------------------------------------------------------
    def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
        """Offer the state after ``step``; kept if it is the best so far or a save is due."""
        step = int(step)
        new_best = self._new_best_step == step
        due = self._latest_due(step)
        # No latest checkpoint at the trial's last step: a finished trial never resumes (and
        # it would double a fused group's final batch); its best is all that is kept.
        save_latest = (due or bool(self.stop_reason)) and step < self.max_train_steps - 1
        if not (new_best or save_latest):
            return
        if new_best:  # the weights are what a retrospective best is for; no optimizer state
            # A fused trial's model defers its copy (``best_snapshot``): the group copies the
            # rows of every trial that improved at once, and one trial's dict is only built
            # when it is persisted.
            later = getattr(model, "best_snapshot", None)
            if later is not None:
                snap = {"step": step, "model": later(), "optimizer": None, "extra": _grab_extra(extra)}
            else:
                snap = _snapshot(step, model, None, extra)
            self._best_snapshot, self._best_dirty = (step, snap), True
            self._new_best_step = None
        if save_latest:
            self.persist(step, _snapshot(step, model, optimizer, extra))

    def _latest_due(self, step: int) -> bool:
        """Whether a latest checkpoint is due at ``step``. In a fused group the first member
        offered at a step decides for all: the group saves together (one round of K files),
        never member 0 alone while the others find the writer busy and lose their progress."""
        if not self._group:
            return self._due_alone()
        shared = self._metrics
        with shared.lock:
            if shared.persist_step != step:
                shared.persist_step, shared.persist_due = step, self._due_alone()
            return shared.persist_due

    def _due_alone(self) -> bool:
        now = time.monotonic()
        due = (now - self._created > self._first_persist if self._last_persist is None
               else now - self._last_persist > PERSIST_SECONDS)
        if due and self.writer is not None and self._last_persist is not None and self.writer.busy():
            due = False  # the last batch is still being written: never pile snapshots up
        return due

    def persist(self, step: int, state: dict[str, Any]) -> None:
        """Flush metrics, then write the latest (and a pending best) checkpoint atomically."""
        self.flush()
        self._save("latest", step, None, state)
        self.persist_best()
        self._last_persist = time.monotonic()

    def persist_best(self) -> bool:
        """Hand a best checkpoint not yet written to the writer; True if there was one."""
        if not self._best_dirty or self._best_snapshot is None:
            return False
        step, state = self._best_snapshot
        resolve = getattr(state.get("model"), "resolve", None)
        if resolve is not None:
            state = {**state, "model": resolve()}
            self._best_snapshot = (step, state)
        self._save("best", step, self.best_value, state)
        self._best_dirty = False
        return True

    def attempt_dir(self) -> Path:
        """This attempt's own folder for its checkpoint files: a worker that lost its lease
        (while another attempt of the trial runs on another host) writes only here, and
        only the record its valid lease wrote says which file is current."""
        return self.checkpoint_dir / f"a{self.attempt}"

    def prune_attempts(self) -> list[str]:
        """Delete the files of earlier attempts' checkpoint folders that the store does not
        record for this trial (a requeued trial's superseded ``latest.pt``, an old best a later
        attempt beat), and the folders left empty; return what went, as ``a1/latest.pt``.
        Only recorded files are ever resumed or read, so the rest is disk spent for nothing on
        a long study with requeues. For after this attempt's checkpoints are written and
        recorded (``finish``)."""
        if self.attempt <= 1 or not self.checkpoint_dir.is_dir():
            return []
        keep = {Path(c.path).parts[-2:] for c in self.store.get_checkpoints(self.trial_id)}
        pruned = []
        for folder in sorted(self.checkpoint_dir.iterdir()):
            k = folder.name[1:]
            if not (folder.is_dir() and folder.name.startswith("a") and k.isdigit()
                    and int(k) < self.attempt):
                continue
            for item in sorted(folder.iterdir()):
                if item.is_file() and (folder.name, item.name) not in keep:
                    item.unlink(missing_ok=True)
                    pruned.append(f"{folder.name}/{item.name}")
            if not any(folder.iterdir()):
                folder.rmdir()
        return pruned

    def _save(self, kind: str, step: int, value: float | None, state: dict[str, Any]) -> None:
        path = self.attempt_dir() / f"{kind}.pt"
        if self.writer is not None:  # off the training thread, batched with the group's
            self.writer.submit(self.trial_id, kind, step, path, value, state)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(state, path)
        self.store.record_checkpoint(Checkpoint(self.trial_id, kind, step, str(path), value, time.time()))

    def restore(self, model: Any = None, optimizer: Any = None, **extra: Any) -> int:
        """Load the latest checkpoint into the given objects; return the step to start from.

        Only a checkpoint the store records for this trial counts, and only from its second
        attempt on: a ``latest.pt`` found on a first attempt belongs to another workspace's
        trial of the same id (a copied folder, a deleted database) and is never resumed."""
        path = self._recorded_latest()
        if path is None:
            return 0
        import torch

        state = torch.load(path, map_location=self.device, weights_only=False)
        if model is not None and state.get("model") is not None:
            model.load_state_dict(state["model"])
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        for key, target in extra.items():
            loader: Callable[[Any], Any] | None = getattr(target, "load_state_dict", None)
            if loader is not None and key in state.get("extra", {}):
                loader(state["extra"][key])
        self._last_persist = time.monotonic()
        self.last_step = int(state["step"])
        self.resumed_from = int(state["step"]) + 1
        log.info("trial %s resumes at step %d from its checkpoint", self.trial_id, self.resumed_from)
        return self.resumed_from

    def _recorded_latest(self) -> Path | None:
        """The latest checkpoint the store records for this trial (written under a valid
        lease by an earlier attempt), if its file is there."""
        if self.attempt <= 1:
            return None
        records = [c for c in self.store.get_checkpoints(self.trial_id) if c.kind == "latest"]
        if not records:
            return None
        path = Path(records[0].path)
        return path if path.exists() else None

    def finish(self) -> None:
        """Flush everything still in memory (metrics and a pending best checkpoint)."""
        self.flush()
        self.persist_best()
        if self.writer is not None:
            self.writer.drain()


def _grab(obj: Any) -> Any:
    # a fused trial's wrappers hand over rows of the group's host snapshot instead: the
    # checkpoint writer (or its saver processes) builds the dict off the training thread
    later = getattr(obj, "row_state", None)
    if later is not None:
        return later()
    sd = obj.state_dict() if hasattr(obj, "state_dict") else obj
    # a fused trial's wrapper hands over fresh tensors already: copying twice is waste
    return sd if getattr(obj, "state_dict_is_copy", False) else _clone(sd)


def _grab_extra(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: _grab(v) for k, v in extra.items()}


def _snapshot(step: int, model: Any, optimizer: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": step,
        "model": _grab(model) if model is not None else None,
        "optimizer": _grab(optimizer) if optimizer is not None else None,
        "extra": _grab_extra(extra),
    }


def _clone(obj: Any) -> Any:
    if hasattr(obj, "detach") and hasattr(obj, "clone"):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj
