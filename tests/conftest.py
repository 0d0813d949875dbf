"""Shared fixtures: a scratch project folder with its own workspace, the CLI as a user runs it,
and a throwaway PostgreSQL server (``pg_server``, ``pg_url``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg_cluster import PgCluster, PgUnavailable
from tests.slurm_cluster import slurm_cluster  # noqa: F401 (the session's one Slurm, for every test file)

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


# --------------------------------------------------------------------------- PostgreSQL

PG_SKIP_ENV = "TUNEPLAY_ALLOW_SKIP_PG"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the whole session (127.0.0.1, a free port).

    Missing server binaries fail the tests that need it, loudly; set
    ``TUNEPLAY_ALLOW_SKIP_PG=1`` to skip them instead.
    """
    cluster: PgCluster | None = None
    try:
        cluster = PgCluster()
        cluster.start()
    except PgUnavailable as exc:
        if cluster is not None:
            cluster.cleanup()
        problem = str(exc)
    else:
        yield cluster
        cluster.cleanup()
        return
    if os.environ.get(PG_SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL unavailable ({PG_SKIP_ENV}=1): {problem}")
    pytest.fail(f"{problem}\n(set {PG_SKIP_ENV}=1 to skip the PostgreSQL tests instead)", pytrace=False)


@pytest.fixture
def pg_url(pg_server: PgCluster) -> Iterator[str]:
    """A URL to a fresh, empty database on the session's server, dropped afterwards."""
    if not pg_server.running():  # a test that stopped the server must not fail the next ones
        pg_server.start()
    name = pg_server.create_database()
    yield pg_server.url(name)
    if not pg_server.running():
        pg_server.start()
    pg_server.drop_database(name)
