"""The ``tuneplay`` console script.

``tuneplay`` alone (or ``tuneplay FILE.toml``) opens the app; every other command is the
headless CLI in :mod:`engine.cli`, except the text report, which draws with plotext here
because the engine never imports a drawing library.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from engine.cli import main as cli_main

    if _wants_app(args):
        missing = [a for a in args if a.endswith(".toml") and not Path(a).is_file()]
        if missing:  # a typo is one line on the terminal, not an app with a vanishing popup
            print(f"{missing[0]}: no such file", file=sys.stderr)
            return 2
        from tuneplay_tui.app import run_app

        return run_app(args)
    from tuneplay_tui.report_cli import register as register_report

    return cli_main(args, extra=[register_report])


def _wants_app(args: list[str]) -> bool:
    """No command, or only a study file (and --workspace, --store, --checkpoints): open the app."""
    rest = list(args)
    for flag in ("--workspace", "--store", "--checkpoints"):
        if flag in rest:
            i = rest.index(flag)
            del rest[i : i + 2]
        rest = [a for a in rest if not a.startswith(f"{flag}=")]
    return not rest or (len(rest) == 1 and rest[0].endswith(".toml"))


if __name__ == "__main__":
    sys.exit(main())
