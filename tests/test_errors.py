"""One base class for errors a user can act on; the CLI prints those as one line and lets
anything else (a bug) show its traceback, instead of catching ValueError wholesale."""

from __future__ import annotations

import argparse

import pytest

from engine.cli import UserError, run_handler
from engine.errors import TuneplayError
from engine.launch import LaunchError
from engine.runner.control import EngineError
from engine.spec import SpecError
from engine.store import DiskFullError, LeaseLost, StoreError
from engine.workloads.command import CommandConfigError
from engine.workloads.registry import WorkloadError
from engine.workspace import StudyConflict


@pytest.mark.parametrize("cls", [UserError, SpecError, StoreError, DiskFullError, LeaseLost, EngineError,
                                 StudyConflict, WorkloadError, CommandConfigError, LaunchError])
def test_every_user_error_is_a_tuneplay_error(cls: type) -> None:
    assert issubclass(cls, TuneplayError)


def test_the_cli_prints_user_errors_in_one_line_and_lets_bugs_through(capsys: pytest.CaptureFixture[str]) -> None:
    def user_mistake(_: argparse.Namespace) -> int:
        raise LaunchError("--time 25:00: expected HH:MM:SS")

    assert run_handler(user_mistake, argparse.Namespace()) == 2
    assert capsys.readouterr().err == "tuneplay: --time 25:00: expected HH:MM:SS\n"

    def bug(_: argparse.Namespace) -> int:
        return int("not a number")  # a plain ValueError is a bug, not a user error

    with pytest.raises(ValueError):
        run_handler(bug, argparse.Namespace())
