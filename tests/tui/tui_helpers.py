"""Helpers for Pilot tests: wait until background work has settled; read the screen."""

from __future__ import annotations

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
    """The visible screen as plain text lines: the cells the compositor draws, exactly as a
    terminal would show them (modal dialogs over the screen beneath included)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips)


def toasts(app: Any) -> list[str]:
    """Every notification raised so far (``title: message``), shown or not any more."""
    return [f"{n.title}: {n.message}" for n in app.notices.history]
