"""SVG snapshots of the main screens at 120x40 and 80x24, on the fake workspace.

Regenerate after an intended visual change with ``pytest tests/tui --snapshot-update``
and look at the report before committing the new SVGs. The fake's data, clock and
analysis are deterministic, and the app polls only when told to, so nothing moves.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import WORKSPACE, make_app
from fake_facade import FakeFacade
from tui_helpers import settle

SIZES = {"wide": (120, 40), "small": (80, 24)}
SCREENS = {  # name: (keys, whether the running study exists)
    "home": ((), True),
    "design": (("2",), True),
    "running": (("3",), True),
    "analysis": (("4",), False),
    "decision": (("5",), False),
}


def before(keys: tuple[str, ...]) -> Any:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(snap_compare: Any, screen: str, size: str) -> None:
    keys, running = SCREENS[screen]
    app = make_app(FakeFacade(WORKSPACE, running=running))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=before(keys))


def test_running_snapshot_on_a_light_theme(snap_compare: Any) -> None:
    """The same running screen on a light theme: every color must still read."""
    app = make_app(FakeFacade(WORKSPACE))

    async def run_before(pilot: Any) -> None:
        pilot.app.theme = "textual-light"
        await before(("3",))(pilot)

    assert snap_compare(app, terminal_size=SIZES["wide"], run_before=run_before)
