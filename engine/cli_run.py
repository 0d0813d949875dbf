"""CLI commands that run things: ``run``, ``engine start|stop|status``, ``export``, trial controls."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli import UserError, open_existing_store, workspace_dir


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="create or continue a study, enqueue its trials, make sure the engine runs")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--wait", action="store_true", help="show progress until the study finishes (Ctrl-C stops waiting, not training)")
    _slot_args(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("engine", help="start, stop or query the background engine")
    p.add_argument("action", choices=("start", "stop", "status"))
    _slot_args(p)
    p.set_defaults(handler=cmd_engine)

    p = sub.add_parser("export", help="one row per trial (or per curve point with --curves)",
                       description="One row per trial: its fields (id, number, state, kind, seed, "
                       "best_value, best_step, steps_done, max_train_steps, wall_time, attempt, "
                       "device, error) and one column per hyperparameter. A hyperparameter named "
                       "like a field is written as hp.NAME (e.g. hp.device), so every column "
                       "name is unique.")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    p.add_argument("--curves", action="store_true", help="one row per (trial, step, metric)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (parquet needs one)")
    p.set_defaults(handler=cmd_export)

    for action in ("cancel", "pause", "requeue"):
        p = sub.add_parser(action, help=f"{action} trials by id")
        p.add_argument("trial_ids", nargs="+", type=int, metavar="TRIAL")
        p.set_defaults(handler=cmd_control, action=action)


def _slot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slots-per-gpu", type=int, default=1, metavar="N", help="workers per GPU (default 1)")
    p.add_argument("--cpu-slots", type=int, default=None, metavar="N", help="workers when there is no GPU (default: one per core)")


def cmd_run(args: argparse.Namespace) -> int:
    from engine.runner.control import start_engine
    from engine.spec import SpecError, line_of, load_study
    from engine.store import open_store
    from engine.workspace import StudyConflict, launch_study

    spec = load_study(args.file)
    _check_gpus(args.file, spec.gpus_per_trial)
    ws = workspace_dir(args)
    store = open_store(ws)
    try:
        launch = launch_study(store, spec)
    except StudyConflict as exc:
        raise SpecError(args.file, exc.key, str(exc), line_of(args.file, exc.key)) from None
    verb = "created" if launch.created else "continued"
    print(f"study {spec.name!r} {verb}: {len(launch.new_trials)} trials enqueued "
          f"(workspace {ws})")
    status = start_engine(ws, args.slots_per_gpu, args.cpu_slots)
    print(f"engine running (pid {status.pid}); log {status.log_path}")
    if args.wait:
        return wait_for_study(store, launch.study.id)
    return 0


def _check_gpus(path: str, gpus_per_trial: int) -> None:
    """Refuse, before storing anything, a study whose trials no slot of this host could run
    (the engine would only fail them)."""
    from engine.runner.slots import GPUS_PER_TRIAL_KEY, gpus_shortfall
    from engine.spec import SpecError

    shortfall = gpus_shortfall(gpus_per_trial)
    if shortfall:
        raise SpecError(path, GPUS_PER_TRIAL_KEY, shortfall)


def wait_for_study(store: Any, study_id: int, poll: float = 0.5) -> int:
    """Print progress until every trial of the study has finished."""
    from engine.status import study_progress

    tty = sys.stdout.isatty()
    last = ""
    try:
        while True:
            prog = study_progress(store, study_id)
            line = prog.line()
            if tty:
                sys.stdout.write("\r\033[K" + line)
                sys.stdout.flush()
            elif line != last:
                print(line, flush=True)
            last = line
            if prog.finished:
                if tty:
                    sys.stdout.write("\n")
                print(prog.summary())
                return 0
            time.sleep(poll)
    except KeyboardInterrupt:
        print("\nstopped waiting; the trials keep training (see `tuneplay status`)")
        return 130


def cmd_engine(args: argparse.Namespace) -> int:
    from engine.runner.control import engine_status, start_engine, stop_engine
    from engine.store import DiskFullError

    ws = workspace_dir(args)
    if args.action == "status":
        status = engine_status(ws)
        print(f"engine running (pid {status.pid}) for {ws}" if status.running else f"no engine serves {ws}")
        if status.disk_full:
            print(f"paused: {status.disk_full}" if status.running else status.disk_full)
        return 0 if status.running else 1
    if args.action == "start":
        try:  # refuses a database that is not a workspace (an empty file, say) before starting
            open_existing_store(args) if (ws / "tuneplay.db").exists() else _create(ws)
        except DiskFullError:
            pass  # the engine starts anyway and waits for room (`engine status` says so)
        status = start_engine(ws, args.slots_per_gpu, args.cpu_slots)
        print(f"engine running (pid {status.pid}); log {status.log_path}")
        if status.disk_full:
            print(f"paused: {status.disk_full}")
        return 0
    stopped = stop_engine(ws)
    print("engine stopped; running trials checkpointed and paused until the next start"
          if stopped else f"no engine serves {ws}")
    return 0


def _create(ws: Path) -> None:
    from engine.store import open_store

    open_store(ws).close()


def cmd_export(args: argparse.Namespace) -> int:
    from engine.export import curves_table, trials_table

    store = open_existing_store(args)
    study = store.find_study(args.study)
    if study is None:
        names = ", ".join(s.name for s in store.list_studies()) or "none yet"
        raise UserError(f"no study named {args.study!r} (studies: {names})")
    df = curves_table(store, study) if args.curves else trials_table(store, study)
    if args.format == "parquet":
        if not args.output:
            raise UserError("--format parquet: give --output FILE (parquet is binary)")
        df.to_parquet(args.output, index=False)
    elif args.format == "json":
        text = df.to_json(orient="records", indent=1, double_precision=15)
        _write(args.output, text + "\n")
    else:
        _write(args.output, df.to_csv(index=False))
    return 0


def _write(output: str | None, text: str) -> None:
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def cmd_control(args: argparse.Namespace) -> int:
    from engine import workspace

    store = open_existing_store(args)
    n = getattr(workspace, args.action)(store, args.trial_ids)
    print(f"{args.action}: {n} of {len(args.trial_ids)} trials changed")
    return 0 if n else 1

