"""CLI commands that run things: ``run``, ``engine start|stop|status``, ``export``, trial controls."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli import UserError, open_args_store, open_existing_store, study_named, workspace_dir
from engine.store import redact_url


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="create or continue a study, enqueue its trials, make sure the engine runs")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--wait", action="store_true",
                   help="show progress until the study finishes (Ctrl-C stops waiting, not training)")
    p.add_argument("--no-engine", action="store_true",
                   help="only enqueue; start no engine here (with --store, one starts only when no host serves)")
    _slot_args(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("engine", help="start, stop or query the background engine")
    p.add_argument("action", choices=("start", "stop", "status"))
    _slot_args(p)
    p.add_argument("--host", metavar="NAME", default=None,
                   help="with --store: this engine's host name (default: the hostname); two engines "
                        "with different names on one machine behave as two machines")
    p.add_argument("--lease", metavar="SECONDS", type=float, default=None,
                   help="with --store: how long a trial stays claimed without news from its worker "
                        "before another host may resume it (default 60)")
    p.set_defaults(handler=cmd_engine)

    p = sub.add_parser("launch", help="start engines on a cluster: launch slurm --workers N ...")
    launch = p.add_subparsers(dest="launcher", metavar="LAUNCHER", required=True)
    from engine.launch import LAUNCHERS

    for name, launcher in LAUNCHERS.items():
        lp = launch.add_parser(name, help=getattr(launcher, "HELP", f"engines through {name}"))
        launcher.add_arguments(lp)
        lp.set_defaults(handler=cmd_launch, launcher=name)

    p = sub.add_parser("export", help="one row per trial (or per curve point with --curves)",
                       description="One row per trial: its fields (id, number, state, kind, seed, "
                       "best_value, best_step, steps_done, max_train_steps, wall_time, attempt, "
                       "host, worker, device, error) and one column per hyperparameter. A hyperparameter named "
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
    p.add_argument("--cpu-slots", type=int, default=None, metavar="N",
                   help="workers when there is no GPU (default: one per core)")


def cmd_run(args: argparse.Namespace) -> int:
    from engine.spec import SpecError, line_of, load_study
    from engine.workspace import StudyConflict, launch_study

    spec = load_study(args.file)
    _check_gpus(args.file, spec.gpus_per_trial)
    ws = workspace_dir(args)
    store = open_args_store(args)
    try:
        launch = launch_study(store, spec)
    except StudyConflict as exc:
        raise SpecError(args.file, exc.key, str(exc), line_of(args.file, exc.key)) from None
    verb = "created" if launch.created else "continued"
    where = f"store {redact_url(args.store)}" if args.store else f"workspace {ws}"
    print(f"study {spec.name!r} {verb}: {len(launch.new_trials)} trials enqueued ({where})")
    if args.store:
        from engine.status import engine_hosts, hosts_line

        hosts = engine_hosts(store)
        if hosts or args.no_engine:  # the hosts serving the store run it (a login node trains nothing)
            print(f"engine: {hosts_line(hosts)}")
            return wait_for_study(store, launch.study.id) if args.wait else 0
    elif args.no_engine:
        return wait_for_study(store, launch.study.id) if args.wait else 0
    status = _start(args, ws)
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


def _start(args: argparse.Namespace, ws: Path) -> Any:
    from engine.runner.control import start_engine

    return start_engine(ws, args.slots_per_gpu, args.cpu_slots, url=args.store,
                        host=getattr(args, "host", None), lease=getattr(args, "lease", None))


def cmd_engine(args: argparse.Namespace) -> int:
    from engine.runner.control import engine_status, host_runtime, stop_engine
    from engine.store import DiskFullError

    ws = workspace_dir(args)
    if args.store:  # this host's engine of a shared store
        runtime = host_runtime(ws, args.host)
        if args.action == "status":
            status = engine_status(runtime)
            print(f"engine host {runtime.name} running (pid {status.pid})" if status.running
                  else f"no engine of this store runs here as host {runtime.name}")
            return 0 if status.running else 1
        if args.action == "start":
            from engine.runner.hosts import check_shared_folder

            store = open_existing_store(args)  # an unreachable store or missing schema: one line
            check_shared_folder(store, ws)  # the folder the other hosts use, or a clear refusal
            store.close()
            status = _start(args, ws)
            print(f"engine host {runtime.name} running (pid {status.pid}); log {status.log_path}")
            return 0
        stopped = stop_engine(runtime)
        print(f"engine host {runtime.name} stopped; trials it was running went back to the queue for the other hosts"
              if stopped else f"no engine of this store runs here as host {runtime.name}")
        return 0
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
        status = _start(args, ws)
        print(f"engine running (pid {status.pid}); log {status.log_path}")
        if status.disk_full:
            print(f"paused: {status.disk_full}")
        return 0
    stopped = stop_engine(ws)
    print("engine stopped; running trials checkpointed and paused until the next start"
          if stopped else f"no engine serves {ws}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from engine.launch import LAUNCHERS, LaunchError

    if not args.store:
        raise UserError(f"launch {args.launcher}: engines on many hosts share a store: give "
                        "--store postgresql://USER@HOST:PORT/DB and --checkpoints DIR (a shared folder)")
    if not getattr(args, "dry_run", False):  # reachable, with its schema, before anything is submitted
        open_existing_store(args).close()
    try:
        return int(LAUNCHERS[args.launcher].run(args, args.store, Path(args.workspace)))
    except LaunchError as exc:
        raise UserError(str(exc)) from None


def _create(ws: Path) -> None:
    from engine.store import open_store

    open_store(ws).close()


def cmd_export(args: argparse.Namespace) -> int:
    from engine.export import curves_table, trials_table

    store = open_existing_store(args)
    study = study_named(store, args.study)
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
    """``cancel|pause|requeue #ID...``: trial ids as the app, ``status`` and ``report`` show
    them (``#12``); an id that names no trial is a user error (exit 2), nothing changed."""
    from engine import workspace
    from engine.store.base import StoreError

    store = open_existing_store(args)
    missing = []
    for trial_id in args.trial_ids:
        try:
            store.get_trial(trial_id)
        except StoreError:
            missing.append(trial_id)
    if missing:
        raise UserError(f"no such trial {', '.join(map(str, missing))} (trial ids are the "
                        "#numbers `tuneplay status` and the app show)")
    n = getattr(workspace, args.action)(store, args.trial_ids)
    ids = ", ".join(f"#{i}" for i in args.trial_ids)
    print(f"{args.action}: {n} of {len(args.trial_ids)} trials changed ({ids})")
    return 0 if n else 1

