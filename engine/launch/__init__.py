"""Launchers: start tuneplay engines on a cluster, all serving one shared store.

Each launcher is a module (or class) with a one-line ``HELP`` and two functions, so another
scheduler (Ray, Kubernetes) is one more file and one more line in LAUNCHERS:

- ``add_arguments(parser)`` adds its flags to ``tuneplay launch NAME``;
- ``run(args, store_url, checkpoints) -> int`` launches, prints one line saying what it did
  (or the script it would submit), and returns the exit code. Options the user can fix raise
  LaunchError, one line naming the option.

Importing this package imports no scheduler client (submitit is imported when a launch runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Protocol

from engine.errors import TuneplayError


class LaunchError(TuneplayError, ValueError):
    """A launch option the user can fix; the message is one line naming the option."""


class Launcher(Protocol):
    """What ``tuneplay launch NAME`` needs from a launcher."""

    HELP: str
    """One line for ``tuneplay launch --help``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, store_url: str, checkpoints: Path) -> int: ...


# Imported after LaunchError, which the launchers raise.
from engine.launch import slurm  # noqa: E402

LAUNCHERS: dict[str, Launcher] = {"slurm": slurm}


def get_launcher(name: str) -> Launcher:
    """The launcher called ``name``; raises LaunchError naming the known ones."""
    try:
        return LAUNCHERS[name]
    except KeyError:
        known = ", ".join(sorted(LAUNCHERS))
        raise LaunchError(f"launch: unknown launcher {name!r} (known: {known})") from None
