"""The headless command line: ``tuneplay validate|sample|status|run|engine|export|...``.

Fast to start: importing this module imports neither torch nor textual; commands import
what they need when they run. User errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.errors import TuneplayError

EXIT_USAGE = 2


class UserError(TuneplayError):
    """A mistake the user can fix; printed as one line, exit code 2."""


def build_parser(extra: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneplay",
        usage="tuneplay [--workspace DIR | --store URL --checkpoints DIR] [FILE.toml]\n"
              "       tuneplay [--workspace DIR | --store URL --checkpoints DIR] COMMAND ...",
        description="Tune deep learning models the playbook's way, from the terminal.\n\n"
                    "With no COMMAND, opens the app on the workspace (and on FILE.toml, a study\n"
                    "file to review in Design). The first use in a folder creates ./.tuneplay/\n"
                    "and starts its engine in the background: it keeps training after you quit;\n"
                    "`tuneplay engine stop` stops it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tuneplay {_version()}")
    parser.add_argument(
        "--workspace", metavar="DIR",
        help="workspace folder (default: $TUNEPLAY_WORKSPACE or ./.tuneplay)",
    )
    parser.add_argument(
        "--store", metavar="URL",
        help="a store shared by engines on many hosts: postgresql://USER@HOST:PORT/DB "
             "(default: $TUNEPLAY_STORE, else the workspace's own SQLite file)",
    )
    parser.add_argument(
        "--checkpoints", metavar="DIR",
        help="with --store: the folder every host shares for checkpoints and engine logs "
             "(default: $TUNEPLAY_CHECKPOINTS)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("validate", help="check study files and report problems")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=cmd_validate)
    p = sub.add_parser("sample", help="print the points a study will try, without training")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--n", type=int, default=None, help="how many trials (default: the budget)")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.set_defaults(handler=cmd_sample)
    p = sub.add_parser("status", help="experiments, studies and trials in the workspace")
    p.set_defaults(handler=cmd_status)
    p = sub.add_parser("db", help="create or upgrade a shared store's schema (db init --store URL)")
    p.add_argument("action", choices=("init",))
    p.set_defaults(handler=cmd_db)
    for register in [*_extra_registrars(), *extra]:
        register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuneplay")
    except PackageNotFoundError:
        return "(not installed)"


def _extra_registrars() -> list[Callable[[Any], None]]:
    """Commands defined in other modules (kept apart so each file stays small)."""
    out: list[Callable[[Any], None]] = []
    for module in ("engine.cli_run", "engine.cli_analysis", "engine.cli_asktell"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        out.append(mod.register)
    return out


def workspace_dir(args: argparse.Namespace) -> Path:
    from engine.store import workspace_path

    return workspace_path(getattr(args, "workspace", None))


def open_existing_store(args: argparse.Namespace) -> Any:
    """The workspace's store (or the shared one ``--store`` names), or a UserError if there
    is no workspace yet."""
    from engine.store import connect, open_store

    ws = workspace_dir(args)
    if getattr(args, "store", None):
        return connect(args.store, ws)
    if not (ws / "tuneplay.db").exists():
        raise UserError(f"{ws}: no workspace here (run `tuneplay run FILE` to create one)")
    return open_store(ws)


def study_named(store: Any, name: str) -> Any:
    """The stored study called ``name``, or a UserError listing the studies there are."""
    study = store.find_study(name)
    if study is None:
        names = ", ".join(s.name for s in store.list_studies()) or "none yet"
        raise UserError(f"no study named {name!r} (studies: {names})")
    return study


def open_args_store(args: argparse.Namespace) -> Any:
    """The store the command line names, creating the workspace's SQLite file if need be."""
    from engine.store import connect

    return connect(getattr(args, "store", None), workspace_dir(args))


def resolve_store(args: argparse.Namespace) -> None:
    """Settle ``args.store`` (``--store`` or $TUNEPLAY_STORE) and, for a shared store, make
    ``args.workspace`` the shared folder (``--checkpoints`` or $TUNEPLAY_CHECKPOINTS).

    Raises:
        UserError: a shared store without a shared folder, or one that does not exist.
    """
    from engine.store import is_shared, redact_url, store_url

    args.store = store_url(getattr(args, "store", None))
    if not args.store:
        return
    if not is_shared(args.store):
        raise UserError(f"--store {redact_url(args.store)}: not a store tuneplay knows; give "
                        "postgresql://USER@HOST:PORT/DB (no URL: the workspace's own SQLite file)")
    if getattr(args, "command", None) == "db":
        return  # the schema needs no folder
    folder = getattr(args, "checkpoints", None) or os.environ.get("TUNEPLAY_CHECKPOINTS")
    if not folder:
        raise UserError("--store: a shared store needs the folder every host shares for "
                        "checkpoints and logs: --checkpoints DIR or TUNEPLAY_CHECKPOINTS")
    path = Path(folder).expanduser().absolute()
    if not path.is_dir():
        raise UserError(f"--checkpoints {path}: no such folder (create it on the shared filesystem)")
    args.workspace = str(path)


def cmd_db(args: argparse.Namespace) -> int:
    from engine.store import redact_url

    if not args.store:
        raise UserError("db init: give the store: --store postgresql://USER@HOST:PORT/DB "
                        "(a workspace's SQLite file is created and upgraded when opened)")
    from engine.store.postgres import init_db

    print(f"{redact_url(args.store)}: {init_db(args.store)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.search import total_trials
    from engine.spec import SpecError, load_study

    status = 0
    for f in args.files:
        try:
            spec = load_study(f)
        except SpecError as exc:
            print(exc.render(), file=sys.stderr)
            status = EXIT_USAGE
            continue
        note = ""
        if total_trials(spec) != spec.budget:
            note = f" (budget {spec.budget} rounds down to {total_trials(spec)} for whole comparisons)"
        print(f"{f}: ok — study {spec.name!r}, {total_trials(spec)} trials, {spec.search}{note}")
    return status


def cmd_sample(args: argparse.Namespace) -> int:
    from engine.kinds import Search
    from engine.search import preview
    from engine.spec import load_study

    spec = load_study(args.file)
    if args.n is not None and not 1 <= args.n <= 1_000_000:
        raise UserError(f"--n: must be between 1 and 1000000, got {args.n}")
    rows = preview(spec, args.n)
    names = [p.name for p in spec.searched]
    if spec.search == Search.BAYESIAN:
        print(
            f"{args.file}: bayesian search: only the initial design is known before results; "
            "later points depend on them", file=sys.stderr,
        )
    if args.format == "json":
        print(json.dumps([{"trial": i, **r} for i, r in enumerate(rows)], indent=1))
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["trial", *names])
        for i, r in enumerate(rows):
            writer.writerow([i, *(r[n] for n in names)])
        sys.stdout.write(out.getvalue())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from engine.store import workspace_path

    ws = workspace_path(args.workspace)
    if not args.store and not (ws / "tuneplay.db").exists():
        print(f"{ws}: no workspace yet (run `tuneplay run FILE` to create one)")
        return 0
    from engine.status import workspace_summary

    print(workspace_summary(ws, args.store))
    return 0


def main(argv: Sequence[str] | None = None, extra: Sequence[Callable[[Any], None]] = ()) -> int:
    """Run a command; return the exit code. ``extra`` registers commands defined outside the engine."""
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    if args.workspace is None:
        args.workspace = os.environ.get("TUNEPLAY_WORKSPACE") or None
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        resolve_store(args)
    except UserError as exc:
        print(f"tuneplay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_handler(args.handler, args)


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command, turning every user error into one line on stderr and exit 2."""
    from engine.spec import SpecError

    try:
        return handler(args)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
    except TuneplayError as exc:  # every user error; anything else is a bug, with its traceback
        print(f"tuneplay: {exc}", file=sys.stderr)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
