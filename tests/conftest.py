"""Shared fixtures: a scratch project folder with its own workspace, and the CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Project:
    """A folder the user `cd`s into; ``.tuneplay/`` inside it is the workspace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.workspace = path / ".tuneplay"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEPLAY_WORKSPACE": str(self.workspace)}

    def tuneplay(self, *args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "tuneplay_tui.launcher", *args], cwd=self.path, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"tuneplay {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def write(self, name: str, text: str) -> Path:
        path = self.path / name
        path.write_text(text)
        return path

    def store(self):  # type: ignore[no-untyped-def]
        from engine.store import open_store

        return open_store(self.workspace)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    proj.tuneplay("engine", "stop", timeout=120)


def wait_until(predicate: Callable[[], bool], timeout: float = 120, poll: float = 0.1) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")
