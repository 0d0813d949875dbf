"""Every key shown says why when it cannot act; errors stay until dismissed; passing notices
take rows of their own instead of covering a status line."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import WORKSPACE
from fake_facade import FakeFacade
from textual.screen import ModalScreen
from tui_helpers import screen_text, settle

from tuneplay_tui.app import TuneplayApp
from tuneplay_tui.widgets.notice_bar import NoticeBar

STAGE_KEYS = {"home": "h", "baseline": "1", "design": "2", "running": "3", "analysis": "4",
              "decision": "5"}


def offered_keys(stage: str) -> list[tuple[str, str]]:
    """(key, action) of every binding the footer or the command palette offers on a stage."""
    screen_cls = TuneplayApp.MODES[stage]
    return [(b.key.split(",")[0], b.action) for b in screen_cls.BINDINGS  # type: ignore[union-attr]
            if b.description]


async def press_and_judge(pilot: Any, stage: str, key: str, action: str) -> None:
    """Press ``key``; it must open a dialog, change the screen or raise a notice."""
    app = pilot.app
    said, mode = len(app.notices.history), app.current_mode
    await pilot.press(key)
    await settle(pilot)
    dialog = isinstance(app.screen, ModalScreen)
    assert dialog or app.current_mode != mode or len(app.notices.history) > said, (
        f"{stage}: {key} ({action}) did nothing and said nothing")
    if dialog:
        await pilot.press("escape")
        await settle(pilot)
    if app.current_mode != stage:
        await pilot.press(STAGE_KEYS[stage])
        await settle(pilot)


@pytest.mark.parametrize("stage", list(STAGE_KEYS))
async def test_every_offered_key_says_why_when_there_is_nothing_to_act_on(stage: str,
                                                                          app_factory) -> None:
    app = app_factory(FakeFacade(WORKSPACE, empty=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press(STAGE_KEYS[stage])
        await settle(pilot)
        for key, action in offered_keys(stage):
            await press_and_judge(pilot, stage, key, action)


async def test_running_keys_say_why_on_an_empty_filter(fake, app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        app.screen.table.filter = "problems"
        for _ in range(6):  # requeued, the failed and diverged trials leave "problems"
            app.screen.refresh_view()
            await pilot.press("r")
            await settle(pilot)
        assert app.screen.table.row_count == 0
        assert "No trial to requeue: the list is empty (/ changes the filter)." in [
            n.message for n in app.notices.history]


async def test_an_error_stays_until_esc_and_a_notice_covers_no_status_line(fake,
                                                                           app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        status = app.screen.query_one("#design-status")
        assert "✓ valid" in screen_text(app)
        app.notify("the launch went wrong [study]", title="launch failed", severity="error")
        app.notify("saved studies/x.toml")
        await settle(pilot)
        bar = app.screen.query_one(NoticeBar)
        assert bar.display and bar.region.y > status.region.y  # below it, not over it
        text = screen_text(app)
        assert "✓ valid" in text  # the status line still shows
        assert "launch failed: the launch went wrong [study]  (esc dismisses)" in text
        assert "saved studies/x.toml" in text
        app.notices.passing(now=float("inf"))  # time passes: the notice expires, not the error
        app.show_notices()
        await settle(pilot)
        assert "saved studies/x.toml" not in screen_text(app)
        assert "launch failed" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not bar.display and "launch failed" not in screen_text(app)


async def test_a_new_workspace_is_announced_once_in_the_app(app_factory) -> None:
    facade = FakeFacade(WORKSPACE, empty=True)
    app = app_factory(facade, created_workspace=f"{WORKSPACE}")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        created = [n for n in app.notices.history if "created the workspace" in n.message]
        assert len(created) == 1 and "keeps going after you quit" in created[0].message
        assert "created the workspace" in screen_text(app)
    quiet = app_factory(FakeFacade(WORKSPACE, empty=True))
    async with quiet.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not [n for n in quiet.notices.history if "created the workspace" in n.message]
