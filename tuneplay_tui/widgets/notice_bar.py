"""The notice bar: the app's notifications in rows of their own, just above the footer.

Docked at the bottom (a margin keeps the footer's row free), it takes rows from the body
only while it has something to say, so it never covers a status line. Standing errors come
first (the latest, with how many more and how to dismiss them), then the passing notices.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static

from tuneplay_tui.notices import Notice

GLYPH = {"error": ("✗ ", "bold $error"), "warning": ("▲ ", "bold $warning"),
         "information": ("● ", "bold $success")}


class NoticeBar(Static):
    """Shows :class:`~tuneplay_tui.notices.NoticeBoard` contents; hidden when empty."""

    DEFAULT_CSS = """
    NoticeBar { dock: bottom; margin-bottom: 1; height: auto; max-height: 4; padding: 0 1;
                background: $panel; display: none; }
    """

    def show_notices(self, errors: Sequence[Notice], passing: Sequence[Notice]) -> None:
        """Redraw (only when what is shown changed: a layout pass costs a frame)."""
        key = (tuple(id(n) for n in errors[-1:]), len(errors), tuple(id(n) for n in passing))
        if getattr(self, "_shown", None) == key:
            return
        self._shown = key
        lines = []
        if errors:
            more = f"  ({len(errors) - 1} more · esc dismisses)" if len(errors) > 1 else \
                "  (esc dismisses)"
            lines.append(notice_line(errors[-1], more))
        lines += [notice_line(n) for n in passing]
        self.display = bool(lines)
        self.update(Content("\n").join(lines))


def notice_line(notice: Notice, tail: str = "") -> Content:
    glyph, style = GLYPH.get(notice.severity, GLYPH["information"])
    color = style.split()[-1]
    title = (f"{notice.title}: ", f"bold {color}") if notice.title else ""
    return Content.assemble((glyph, style), title, (notice.message, color if notice.sticky else ""),
                            (tail, "$foreground-muted"))
