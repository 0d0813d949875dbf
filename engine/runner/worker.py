"""A worker process: warm (torch imported once), pinned to one device slot, claiming trials.

Workers claim QUEUED trials straight from the workspace (atomically, so a trial never runs
twice at once), run them, and record the outcome. A worker takes a *list* of trials per
claim so that a later fused runner can train a group at once; today it runs them in turn.

The engine stops a worker with SIGTERM: the running trial checkpoints and is left PAUSED.
A worker whose engine dies exits too (parent-death signal plus a watchdog), leaving its
trials RUNNING with a heartbeat that goes stale, so the next engine resumes them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.runner.checkpoint_writer import CheckpointWriter
from engine.runner.context import (
    PERSIST_SECONDS,
    MetricBuffer,
    StopReason,
    TrialContext,
    WorkloadFailed,
)
from engine.runner.finishing import EndKind, Handover, attempt_end, group_ends, record_ends
from engine.runner.grouping import group_size
from engine.runner.lease import FencedStore
from engine.runner.saver import SaverPool, savers_for
from engine.spec import StoredStudy, stored_study
from engine.store import DiskFullError, connect
from engine.store.base import (
    DEFAULT_LEASE_SECONDS,
    Storage,
    Study,
    Trial,
    TrialState,
)
from engine.workloads.command import CommandWorkload
from engine.workloads.registry import WorkloadError, load_train_function, resolve_workload

HEARTBEAT_SECONDS = 1.0
IDLE_POLL_SECONDS = 0.02
log = logging.getLogger("tuneplay.worker")


class Worker:
    """Claims and runs trials until told to stop."""

    def __init__(
        self, store: Storage, workspace: Path, name: str, device: str, label: str = "",
        group_size: int = 1, savers: int = 0, host: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        # every write this worker makes carries its trial's lease (see engine.runner.lease)
        self.store = store if isinstance(store, FencedStore) else FencedStore(store, host, lease_seconds)
        self.workspace = workspace
        self.name = name
        self.device = device
        self.label = label or device
        self.group_size = group_size
        # the GPUs of this worker's slot (CUDA_VISIBLE_DEVICES as the engine set it)
        self.gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()] \
            if device.startswith("cuda") else []
        self.stopping = False
        self.current: list[TrialContext] = []
        self.finishing: list[TrialContext] = []  # trained; waiting for their checkpoints to be written
        self._finishing_lock = threading.Lock()
        self._studies: dict[int, Study] = {}
        self._models: dict[int, StoredStudy] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._parent = os.getppid()
        self.savers = SaverPool(savers, workspace / "checkpoints")
        self.writer = CheckpointWriter(self.store, self.savers)

    # -- main loop -------------------------------------------------------------------
    def serve(self, once: bool = False) -> None:
        threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat").start()
        try:
            while not self.stopping:
                trials = self.claim()
                if trials:
                    self.run_trials(trials)
                elif once:
                    return
                else:
                    time.sleep(IDLE_POLL_SECONDS)
        finally:
            self.writer.drain()  # the last group's ends are recorded before the worker goes

    def claim(self) -> list[Trial]:
        """The oldest queued trial, with as many of its fusion group as this worker takes;
        nothing while that trial needs more GPUs than this worker's slot has (it waits for the
        engine to replan wider slots, so it never trains on fewer GPUs than its study asks)."""
        key = self.store.next_queued_group_key()
        # a fusion group's trials take one GPU each (group_key is "" for wider studies)
        if key is None or (not key and self._oldest_too_wide()):
            return []
        limit = min(self.group_size, group_size(key, self.device, self._auto_group(key)))
        if limit > 1 and not _fused_available():
            limit = 1
        return self.store.claim_trials(self.name, self.label, limit=limit, group=True)

    _too_wide_until = 0.0  # monotonic time until which a refusal stands (see _oldest_too_wide)
    _TOO_WIDE_RECHECK_SECONDS = 0.5  # the engine replans within a second or so anyway

    def _oldest_too_wide(self) -> bool:
        """Whether the oldest queued trial's study needs a wider slot than this worker's.

        Cheap while idle: only the studies are read unless one is wider than this slot, and
        a refusal stands for a moment instead of listing the queue on every 20 ms poll.
        """
        now = time.monotonic()
        if now < self._too_wide_until:
            return True
        width = max(1, len(self.gpus))  # a CPU worker runs trials of one GPU (on the CPU)
        studies = self.store.list_studies()
        wider = {s.id for s in studies if stored_study(s).spec.gpus_per_trial > width}
        oldest = self.store.list_trials(states=[TrialState.QUEUED])[:1] if wider else []
        if oldest and oldest[0].study_id in wider:
            self._too_wide_until = now + self._TOO_WIDE_RECHECK_SECONDS
            return True
        return False

    def _auto_group(self, key: str) -> int | None:
        if not key.startswith("auto|") or self.device == "cpu":
            return None
        try:
            from engine.workloads.fused import auto_group_size
        except ImportError:
            return None
        trial_study = self.store.list_trials(states=[TrialState.QUEUED])[:1]
        if not trial_study:
            return None
        model = self._model(trial_study[0].study_id)
        info = resolve_workload(model.spec.workload, base_dir=model.spec.workload_dir or None)
        return auto_group_size(info, model.hyperparameters(trial_study[0].params), self.device)

    def stop(self, *_: Any) -> None:
        """Finish the current step, checkpoint, leave running trials PAUSED, then exit."""
        self.stopping = True
        for ctx in self.current:
            ctx.request_stop(StopReason.PAUSE)

    # -- running ---------------------------------------------------------------------
    def run_trials(self, trials: Sequence[Trial]) -> None:
        """Run a claimed group: fused as one computation when the workload can, else in turn."""
        if len(trials) > 1 and self._fused_function(trials[0]) is not None:
            self.run_fused(trials)
            return
        for trial in trials:
            if self.stopping:
                self.store.set_state([trial.id], TrialState.QUEUED, only_from=[TrialState.RUNNING])
                continue
            self.run_one(trial)

    def run_one(self, trial: Trial) -> None:
        spec = self._model(trial.study_id).spec
        ctx = TrialContext(
            self.store, trial, spec.metric, spec.mode, spec.eval_every,
            self.workspace / "checkpoints" / str(trial.id), self.device, self.writer,
            gpus=min(spec.gpus_per_trial, len(self.gpus)),
        )
        self._restore_best(ctx, trial)
        self.current = [ctx]
        started = time.monotonic()
        error, state = "", TrialState.COMPLETED
        try:
            hp = self._model(trial.study_id).hyperparameters(trial.params)
            if isinstance(spec.workload, CommandWorkload):
                from engine.runner.command import run_command

                run_command(spec.workload, hp, ctx, self.workspace, trial.attempt, trial.steps_done)
            else:
                self._function(spec.workload, spec.workload_dir)(hp, ctx)
                if not ctx.should_stop() and ctx.best_value is None:
                    raise WorkloadFailed(f"reported no {spec.metric} (the study's metric)")
        except DiskFullError as exc:
            self.current = []
            _left_running(trial.id, exc)
            return
        except Exception as exc:  # a workload's bug ends its trial, never the worker
            state, error = TrialState.FAILED, _error_text(exc)
            log.error("trial %s failed:\n%s", trial.id, traceback.format_exc())
        finally:
            self.current = []
        self._finish(ctx, trial, state, error, time.monotonic() - started)

    def run_fused(self, trials: Sequence[Trial]) -> None:
        """Train the group as one computation; each trial still ends on its own."""
        spec = self._model(trials[0].study_id).spec
        contexts = []
        shared = MetricBuffer()  # one flush for the whole group
        for trial in trials:
            ctx = TrialContext(
                self.store, trial, spec.metric, spec.mode, spec.eval_every,
                self.workspace / "checkpoints" / str(trial.id), self.device, self.writer, shared,
                # a group's first save is one write per trial: not before the usual interval
                first_persist=PERSIST_SECONDS, gpus=min(1, len(self.gpus)),
            )
            self._restore_best(ctx, trial)
            contexts.append(ctx)
        self.current = contexts
        started = time.monotonic()
        error, state = "", TrialState.COMPLETED
        try:
            hps = [self._model(t.study_id).hyperparameters(t.params) for t in trials]
            fused = self._fused_function(trials[0])
            assert fused is not None
            fused(hps, contexts)
        except Exception as exc:
            state, error = TrialState.FAILED, _error_text(exc)
            log.error("fused group %s failed:\n%s", [t.id for t in trials], traceback.format_exc())
        finally:
            self.current = []
        seconds = time.monotonic() - started
        log.info("fused group of %d trials took %.2f s", len(trials), seconds)
        self._end_group(contexts, trials, state, error, seconds)

    def _end_group(
        self, contexts: Sequence[TrialContext], trials: Sequence[Trial], state: TrialState, error: str,
        seconds: float,
    ) -> None:
        """Hand the group's metrics and best checkpoints over as one batch, and record how each
        trial ended once that batch is on disk, on the writer's thread: this worker claims and
        trains its next group meanwhile (a GPU would otherwise idle while hundreds of best
        checkpoints are written). The trials stay RUNNING, and heartbeated, until then, so a
        trial is never COMPLETED without its best checkpoint on disk."""
        handed: list[Handover] = []
        with self._finishing_lock:
            self.finishing = [*self.finishing, *contexts]

        def then(written: bool) -> None:
            try:
                self._record_ends(contexts, trials, state, error, seconds, handed, written)
                if written:
                    for ctx in contexts:
                        _prune(ctx)
            finally:
                leaving = {id(ctx) for ctx in contexts}
                with self._finishing_lock:
                    self.finishing = [ctx for ctx in self.finishing if id(ctx) not in leaving]

        with self.writer.together(then):
            for ctx in contexts:
                try:
                    ctx.flush()  # the group shares one metric buffer: the first flush writes all
                    handed.append(Handover(True, best_sent=ctx.persist_best()))
                except Exception as exc:
                    handed.append(Handover(False, f"could not save results: {_error_text(exc)}"))

    def _record_ends(
        self, contexts: Sequence[TrialContext], trials: Sequence[Trial], state: TrialState, error: str,
        seconds: float, handed: Sequence[Handover], written: bool,
    ) -> None:
        try:
            record_ends(self.store, group_ends(contexts, trials, state, error, seconds, handed, written))
        except Exception:
            log.exception("recording the end of fused group %s failed", [t.id for t in trials])

    def _fused_function(self, trial: Trial) -> Callable[..., Any] | None:
        spec = self._model(trial.study_id).spec
        ref = spec.workload
        if not isinstance(ref, str):
            return None
        try:
            from engine.workloads.fused import fused_train_function
        except ImportError:
            return None
        return fused_train_function(resolve_workload(ref, base_dir=spec.workload_dir or None))

    def _finish(self, ctx: TrialContext, trial: Trial, state: TrialState, error: str, seconds: float) -> None:
        try:
            ctx.finish()
        except DiskFullError as exc:
            _left_running(trial.id, exc)
            return
        except Exception as exc:
            state, error = TrialState.FAILED, f"could not save results: {_error_text(exc)}"
        end = attempt_end(ctx, trial, state, error, seconds)
        if end.kind is EndKind.PAUSED:
            self.store.set_state([trial.id], TrialState.PAUSED, only_from=[TrialState.RUNNING])
        elif end.progress is not None:
            try:
                self.store.finish_trial(trial.id, end.progress)
            except Exception as exc:  # e.g. cancelled meanwhile: the stored state wins
                log.info("trial %s not finished as %s: %s", trial.id, end.progress.state.value, exc)
        _prune(ctx)

    def _restore_best(self, ctx: TrialContext, trial: Trial) -> None:
        """On a resumed attempt, carry the best-so-far from the checkpoint record."""
        if trial.attempt <= 1:
            return
        for cp in self.store.get_checkpoints(trial.id):
            if cp.kind == "best" and cp.value is not None:
                ctx.best_step, ctx.best_value = cp.step, cp.value

    def _study(self, study_id: int) -> Study:
        if study_id not in self._studies:
            self._studies[study_id] = self.store.get_study(study_id)
        return self._studies[study_id]

    def _model(self, study_id: int) -> StoredStudy:
        """The study's stored spec, typed (read once per study)."""
        if study_id not in self._models:
            self._models[study_id] = stored_study(self._study(study_id))
        return self._models[study_id]

    def _function(self, ref: str, base_dir: str = "") -> Callable[..., Any]:
        """The training function, imported once, from the study file's folder if need be."""
        if ref not in self._functions:
            try:
                info = resolve_workload(ref, base_dir=base_dir or None)
            except WorkloadError as exc:
                raise RuntimeError(str(exc)) from None
            self._functions[ref] = load_train_function(info)
        return self._functions[ref]

    # -- heartbeat -------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            if os.getppid() != self._parent:  # the engine is gone: stop at once
                os._exit(3)
            current = list(self.current) + list(self.finishing)
            if not current:
                continue
            try:
                self._beat(current)
            except Exception:
                log.exception("heartbeat failed")

    def _beat(self, current: list[TrialContext]) -> None:
        """Renew the leases of the trials in hand; stop those cancelled (their end is the
        user's) and those whose lease is lost (their end is the new holder's)."""
        progress = {c.trial_id: (c.last_step + 1, c.best_step, c.best_value) for c in current}
        states = self.store.renew(list(progress), progress)
        for ctx in current:
            state = states.get(ctx.trial_id, TrialState.RUNNING)
            if ctx.trial_id in self.store.lost or state is None:
                ctx.request_stop(StopReason.LOST)
            elif state is not TrialState.RUNNING:
                ctx.request_stop(StopReason.CANCEL)


def _left_running(trial_id: int, exc: BaseException) -> None:
    """A full disk is no fault of the trial: it is left RUNNING without a heartbeat, and the
    engine requeues it once there is room again; it resumes from its last checkpoint."""
    log.warning("trial %s stopped: %s; it resumes when there is room", trial_id, exc)


def _fused_available() -> bool:
    try:
        import engine.workloads.fused  # noqa: F401 (torch and the fused trainers import)
    except ImportError:
        return False
    return True


def _error_text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, WorkloadFailed) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "…"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the engine that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def warm_up() -> None:
    """Pay the one-off costs (torch.optim's first use, the digits data) before any trial."""
    try:
        import torch

        from engine.workloads.builtin import BUILTINS
        from engine.workloads.digits import digits_data
        from engine.workloads.registry import load_train_function

        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        digits_data("cpu")
        for info in BUILTINS.values():
            load_train_function(info)
    except Exception:  # warming is an optimisation; a trial reports any real problem
        log.exception("warm-up failed")


def configure_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _prune(ctx: TrialContext) -> None:
    """Delete the trial's superseded checkpoint files; never fail a trial over it."""
    try:
        pruned = ctx.prune_attempts()
    except Exception:
        log.exception("pruning old checkpoint folders of trial %s failed", ctx.trial_id)
        return
    if pruned:
        log.info("trial %s: deleted earlier attempts' checkpoint files the store no longer "
                 "records: %s", ctx.trial_id, ", ".join(pruned))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneplay-worker")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--label", default="", help="device name shown to users (gpu0, cpu)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=4096, help="most trials to train fused at once")
    parser.add_argument("--savers", type=int, default=None,
                        help="checkpoint saver processes (default: from the device and threads)")
    parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--store", default=None, help="the store URL (default: the workspace's SQLite)")
    parser.add_argument("--host", default="", help="the engine host this worker belongs to")
    parser.add_argument("--lease", type=float, default=DEFAULT_LEASE_SECONDS,
                        help="seconds a claim holds a trial without renewal")
    args = parser.parse_args(argv)
    _die_with_parent()
    os.umask(0o077)  # workspace files are the owner's alone
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    configure_threads(args.threads)
    warm_up()
    worker = Worker(
        connect(args.store, args.workspace), Path(args.workspace), args.name, args.device, args.label,
        args.group_size,
        savers_for(args.device, args.threads) if args.savers is None else args.savers,
        host=args.host, lease_seconds=args.lease,
    )
    log.info("checkpoint saver processes: %d", worker.savers.processes)
    worker.savers.prewarm()  # spawned and torch imported while the first trials start
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the viewer, not training
    print(json.dumps({"ready": args.name, "pid": os.getpid()}), flush=True)
    try:
        worker.serve(once=args.once)
    finally:
        worker.writer.drain()
        worker.savers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
