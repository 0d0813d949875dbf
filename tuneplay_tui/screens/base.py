"""What every stage screen shares: the frame, help text, and calling the engine safely.

A screen composes the header, its body and the footer; it redraws from ``app.state`` in
:meth:`StageScreen.update_view` whenever the poller brings news or the screen is shown.
Facade calls run in thread workers (:meth:`StageScreen.engine_call`) and come back as an
:class:`~tuneplay_tui.messages.EngineCallDone` message: a failure becomes a notification,
never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from tuneplay_tui.format import one_line
from tuneplay_tui.messages import EngineCallDone, run_engine_call
from tuneplay_tui.widgets.header import StageHeader
from tuneplay_tui.widgets.notice_bar import NoticeBar

if TYPE_CHECKING:
    from tuneplay_tui.app import TuneplayApp
    from tuneplay_tui.state import AppState

NARROW = 110  # below this width, side-by-side panels stack
SHORT = 32  # below this height, secondary panels shrink


class StageScreen(Screen[None]):
    """A stage of the playbook (or the home screen): header, body, footer."""

    STAGE: ClassVar[str] = "home"
    TITLE_TEXT: ClassVar[str] = ""
    HELP: ClassVar[str] = ""
    """Markdown: the playbook idea behind this screen (shown by ``?``)."""

    @property
    def tuneplay(self) -> TuneplayApp:
        return self.app  # type: ignore[return-value]

    @property
    def state(self) -> AppState:
        return self.tuneplay.state

    @property
    def facade(self) -> Any:
        return self.tuneplay.facade

    def compose(self) -> ComposeResult:
        yield StageHeader(self.STAGE, id="stage-header")
        yield from self.compose_body()
        yield NoticeBar(id="notices")
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self._apply_size(self.app.size.width, self.app.size.height)
        self.call_after_refresh(self.tuneplay.show_notices)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.set_class(width < NARROW, "-narrow")
        self.set_class(height < SHORT, "-short")

    def on_screen_resume(self) -> None:
        self.refresh_view()
        self.tuneplay.show_notices()  # what was raised while another screen showed

    def show_notices(self, errors: Any, passing: Any) -> None:
        for bar in self.query(NoticeBar):  # none yet while the screen is being composed
            bar.show_notices(errors, passing)

    def refresh_view(self) -> None:
        """Redraw from the app state (called on every poll while this screen is shown)."""
        self.query_one(StageHeader).refresh()
        try:
            self.update_view()
        except Exception as exc:  # noqa: BLE001 (a drawing bug must not end the session)
            self.notify(one_line(exc), title="display error", severity="error")

    def update_view(self) -> None:
        """Override: draw the body from ``self.state``."""

    def set_line(self, selector: str, content: Any) -> None:
        """Update a fixed-height Static without a layout pass, and only when it changed.

        A layout pass re-renders the whole screen; on the running screen that happens
        every poll otherwise.
        """
        widget = self.query_one(selector, Static)
        if getattr(widget, "_last_line", None) != content:
            widget._last_line = content  # type: ignore[attr-defined]
            widget.update(content, layout=False)

    # ------------------------------------------------------------- engine calls
    def engine_call(self, label: str, fn: Callable[[], Any],
                    on_done: Callable[[Any], None] | None = None) -> None:
        """Run ``fn`` (a facade call) in a thread; ``on_done(result)`` on the UI thread."""
        run_engine_call(self, label, fn, on_done)

    def on_engine_call_done(self, message: EngineCallDone) -> None:
        message.stop()  # handled here: the app's handler must not run on_done a second time
        if message.error is not None:
            self.notify(message.error, title=f"{message.label} failed", severity="error")
        elif message.on_done is not None:
            message.on_done(message.result)
        self.tuneplay.poller.request()

    def require_study(self) -> int | None:
        """The selected study's id, or a hint and None when there is none."""
        if self.state.study_id is None:
            self.notify("No study yet: design one on screen 2 (press 2) or open a study file "
                        "(h, then o).", severity="warning")
        return self.state.study_id

    def require_experiment(self) -> int | None:
        if self.state.experiment_id is None:
            self.notify("No experiment yet: open a study file (h, then o) or create one "
                        "(h, then n).", severity="warning")
        return self.state.experiment_id
