"""CLI commands for trials run outside the engine: ``create``, ``ask``, ``tell``.

The logic lives in :mod:`engine.asktell`; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from engine.cli import UserError, open_args_store, open_existing_store, study_named, workspace_dir


def register(sub: Any) -> None:
    p = sub.add_parser("create", help="register a study for ask/tell, queueing no trial and starting no engine")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=cmd_create)

    p = sub.add_parser(
        "ask", help="hand out a study's next trials to run elsewhere (marked running)",
        description="Hand out the study's next K trials (its quasi-random points or Bayesian "
                    "suggestions), marked running outside the engine: id, training seed, "
                    "max_train_steps and the whole config of each. Report each result with "
                    "`tuneplay tell`.")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--n", type=int, default=1, metavar="K", help="how many trials (default 1)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.set_defaults(handler=cmd_ask)

    p = sub.add_parser(
        "tell", help="record results of asked trials: a value, a curve, or failed/diverged",
        description="Record the result of a trial handed out by `tuneplay ask`: --value V (NaN "
                    "or inf: DIVERGED), --metrics FILE (JSON lines {\"step\": 10, \"val_error\": "
                    "0.12}), or --state failed|diverged. With --file, many trials from JSON lines "
                    "{\"trial\": ID, \"value\": V} (or \"curve\": [...], or \"state\": ...), "
                    "checked whole before anything is recorded.")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("trial", nargs="?", metavar="TRIAL", help="the trial id `tuneplay ask` gave")
    p.add_argument("--value", metavar="V", help="the trial's final value of the study's metric")
    p.add_argument("--metrics", metavar="FILE", help="the trial's curve as JSON lines")
    p.add_argument("--state", metavar="STATE", help="failed or diverged")
    p.add_argument("--file", metavar="RESULTS", help="results of many trials as JSON lines")
    p.set_defaults(handler=cmd_tell)


def cmd_create(args: argparse.Namespace) -> int:
    from engine.asktell import create_study
    from engine.spec import SpecError, line_of, load_study
    from engine.workspace import StudyConflict

    spec = load_study(args.file)
    store = open_args_store(args)
    try:
        study, created = create_study(store, spec)
    except StudyConflict as exc:
        raise SpecError(args.file, exc.key, str(exc), line_of(args.file, exc.key)) from None
    from engine.status import progress_of

    verb = "registered" if created else "exists"
    print(f"study {study.name!r} {verb}: {progress_of(study, store.list_trials(study.id)).line()}; "
          f"`tuneplay ask {study.name} --n K` hands out trials")
    if _engine_serves(args, store):
        print("note: an engine serves this workspace; it tops the study up to its budget with "
              "trials of its own (stop it, or use another --workspace, to run them all elsewhere)")
    return 0


def _engine_serves(args: argparse.Namespace, store: Any) -> bool:
    if args.store:
        from engine.status import engine_hosts

        return bool(engine_hosts(store))
    from engine.runner.control import engine_status

    return engine_status(workspace_dir(args)).running


def cmd_ask(args: argparse.Namespace) -> int:
    from engine.asktell import ask, asked_rows

    store = open_existing_store(args)
    study = _study(store, args.study)
    trials = ask(store, study, args.n)
    if len(trials) != args.n:
        print(f"tuneplay: study {study.name!r}: {len(trials)} trials handed out, not {args.n} "
              "(whole comparisons, within its budget)", file=sys.stderr)
    rows = asked_rows(study, trials)
    sys.stdout.write(_json(rows) if args.format == "json" else _csv(rows))
    return 0


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    """One row per trial: trial, seed, max_train_steps, then one column per hyperparameter
    (``hp.NAME`` for one named like those three, as ``export`` does)."""
    fields = ["trial", "seed", "max_train_steps"]
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields + [f"hp.{n}" if n in fields else n for n in names])
    for r in rows:
        writer.writerow([r[f] for f in fields] + [r["params"].get(n, "") for n in names])
    return out.getvalue()


def cmd_tell(args: argparse.Namespace) -> int:
    from engine import asktell
    from engine.spec import stored_study

    given = [flag for flag in ("value", "metrics", "state", "file") if getattr(args, flag) is not None]
    if len(given) != 1:
        raise UserError("tell: give one of --value V, --metrics FILE, --state failed|diverged "
                        "(with TRIAL), or --file RESULTS (without)")
    if (given[0] == "file") == (args.trial is not None):
        raise UserError("tell: --file takes results of many trials and no TRIAL; --value, "
                        "--metrics and --state need TRIAL")
    store = open_existing_store(args)
    study = _study(store, args.study)
    if args.file is not None:
        told = asktell.read_results(store, study, args.file)
    else:
        told = [_one(store, study, args)]
    asktell.record(store, told)
    for t in told:
        print(t.line(stored_study(study).spec.metric))
    return 0


def _one(store: Any, study: Any, args: argparse.Namespace) -> Any:
    """The told result of one trial, checked (the trial, then what is told of it)."""
    from engine import asktell
    from engine.spec import stored_study

    trial_id = _trial_arg(args.trial)
    if args.value is not None:
        value = asktell.parse_value(args.value)
        return asktell.from_value(asktell.told_trial(store, study, trial_id), value)
    if args.state is not None:
        return asktell.from_state(asktell.told_trial(store, study, trial_id), args.state)
    points = asktell.read_curve(args.metrics)
    trial = asktell.told_trial(store, study, trial_id)
    spec = stored_study(study).spec
    return asktell.from_curve(trial, spec.metric, spec.mode, points, args.metrics)


def _trial_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"TRIAL {text!r}: expected a trial id (a whole number, as `tuneplay ask` gives)") from None


def _study(store: Any, name: str) -> Any:
    return study_named(store, name)
