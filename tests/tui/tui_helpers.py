"""Helpers for Pilot tests: wait until background work has settled; read the screen."""

from __future__ import annotations

import html
import re
from typing import Any

from textual.pilot import Pilot


async def settle(pilot: Pilot[Any], rounds: int = 6) -> None:
    """Wait for workers (polls, analysis, facade calls) and the messages they post."""
    app = pilot.app
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            await pilot.pause()
            if not any(w.is_running for w in app.workers):
                return


async def poll(pilot: Pilot[Any]) -> None:
    """One poll of the fake, as the 1 s timer would do, then settle."""
    pilot.app.poller.request()  # type: ignore[attr-defined]
    await settle(pilot)


def screen_text(app: Any) -> str:
    """The visible screen as plain text lines (from the SVG screenshot)."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        x, y, text = float(m.group(1)), float(m.group(2)), html.unescape(m.group(3))
        rows.setdefault(y, []).append((x, text.replace("\xa0", " ")))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            col = round(x / 12.2)
            line = line.ljust(col) + text
        lines.append(line.rstrip())
    return "\n".join(lines)


def toasts(app: Any) -> list[str]:
    """Every notification raised so far (``title: message``), shown or not any more."""
    return [f"{n.title}: {n.message}" for n in app.notices.history]
