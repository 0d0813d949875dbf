"""Fixtures for the app's tests: the fake engine facade and an app factory.

Tests import the fake modules by name (``fake_facade``), so this folder is put on the path.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_facade import FakeFacade

from tuneplay_tui.app import TuneplayApp

WORKSPACE = "/tmp/tuneplay-fake/.tuneplay"  # fixed, so snapshots never show a tmp path


@pytest.fixture
def fake() -> FakeFacade:
    """The canned workspace with a running study (and a finished one with a decision)."""
    return FakeFacade(WORKSPACE)


@pytest.fixture
def finished_fake() -> FakeFacade:
    """The canned workspace without the running study: the latest study is finished."""
    return FakeFacade(WORKSPACE, running=False)


def make_app(facade: Any, **kwargs: Any) -> TuneplayApp:
    """The app on a fake: no periodic polling (tests poll explicitly), frozen clock."""
    kwargs.setdefault("poll_interval", 0)
    kwargs.setdefault("clock", lambda: facade.now)
    return TuneplayApp(facade, **kwargs)


@pytest.fixture
def app_factory() -> Callable[..., TuneplayApp]:
    return make_app


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no asyncio plugin is needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True
