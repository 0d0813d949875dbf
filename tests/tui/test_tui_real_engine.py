"""End to end: the real app on the real engine and a real workspace, driven by the keyboard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tui_helpers import screen_text, settle

from engine.facade_local import LocalFacade
from engine.runner.control import stop_engine
from engine.store.base import TrialState
from tuneplay_tui.app import TuneplayApp

pytestmark = pytest.mark.slow


async def _wait(pilot, predicate, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for the engine")
        await asyncio.sleep(0.25)
        await pilot.pause()


def _facade(tmp_path: Path, steps: int) -> LocalFacade:
    facade = LocalFacade(tmp_path / ".tuneplay")
    facade.create_experiment("digits", "builtin:digits-mlp", {"optimizer": "adam"}, "val_error", "min", steps)
    return facade


async def test_design_launch_watch_and_analyse_a_study_with_the_keyboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    facade = _facade(tmp_path, 200)
    app = TuneplayApp(facade, poll_interval=0.5)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("2")
            await settle(pilot)
            assert "✓ valid" in screen_text(app)
            await pilot.press("L")  # save under studies/ and launch
            await settle(pilot)
            studies = facade.store.list_studies()
            assert len(studies) == 1 and (tmp_path / "studies" / f"{studies[0].name}.toml").exists()
            sid = studies[0].id
            await _wait(pilot, lambda: facade.trials(sid) and all(t.state.is_finished() for t in facade.trials(sid)))
            assert all(t.state == TrialState.COMPLETED for t in facade.trials(sid))
            await pilot.press("3")
            await asyncio.sleep(1.2)
            await settle(pilot)
            text = screen_text(app)
            assert f"{len(facade.trials(sid))} done" in text
            await pilot.press("4")
            await settle(pilot)
            text = screen_text(app)
            assert "findings (" in text and "axis plot:" in text
    finally:
        stop_engine(tmp_path / ".tuneplay")


async def test_quit_during_a_running_study_and_reopen_shows_the_same_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    facade = _facade(tmp_path, 4000)
    try:
        app = TuneplayApp(facade, poll_interval=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("2")
            await settle(pilot)
            await pilot.press("L")
            await settle(pilot)
            sid = facade.store.list_studies()[0].id
            await _wait(pilot, lambda: any(t.state == TrialState.RUNNING for t in facade.trials(sid)))
            await pilot.press("q")
        running = [t.id for t in facade.trials(sid) if t.state == TrialState.RUNNING]
        assert running, "the engine keeps training after the app quits"
        reopened = TuneplayApp(LocalFacade(tmp_path / ".tuneplay"), poll_interval=0.5)
        async with reopened.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("3")
            await asyncio.sleep(1.2)
            await settle(pilot)
            text = screen_text(reopened)
            states = {t.state for t in facade.trials(sid)}
            assert "running" in text or states <= {TrialState.COMPLETED}
            assert f'study "{facade.store.get_study(sid).name}"' in text
    finally:
        stop_engine(tmp_path / ".tuneplay")
