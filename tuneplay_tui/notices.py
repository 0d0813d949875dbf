"""What the app has to tell the user: errors stay until dismissed, other notices pass.

Textual's toasts float over the bottom right of the screen, where every stage keeps its
status line, and vanish after a few seconds, errors included. The app keeps its notices
here instead and shows them in a bar of their own above the footer
(:class:`~tuneplay_tui.widgets.notice_bar.NoticeBar`): the body gives up those rows while a
notice shows, so nothing is covered. Plain Python, so the rules are tested without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass

PASSING_SECONDS = 4.0  # how long an information or warning notice stays
PASSING_SHOWN = 2  # the latest passing notices shown at once (older ones give way)


@dataclass(frozen=True)
class Notice:
    """One notification: an ``error`` stays until dismissed, the others pass."""

    message: str
    title: str = ""
    severity: str = "information"  # "information" | "warning" | "error"
    raised_at: float = 0.0
    timeout: float = PASSING_SECONDS

    @property
    def sticky(self) -> bool:
        return self.severity == "error"

    def text(self) -> str:
        """``title: message`` (the message alone when there is no title)."""
        return f"{self.title}: {self.message}" if self.title else self.message


class NoticeBoard:
    """Every notice raised (``history``), the errors still standing, the passing ones."""

    def __init__(self) -> None:
        self.history: list[Notice] = []
        self.errors: list[Notice] = []
        self._passing: list[Notice] = []

    def add(self, notice: Notice) -> None:
        self.history.append(notice)
        if notice.sticky:
            self.errors.append(notice)
        else:
            self._passing = [*self._passing, notice][-PASSING_SHOWN:]

    def passing(self, now: float) -> list[Notice]:
        """The passing notices not yet expired at ``now`` (oldest first)."""
        self._passing = [n for n in self._passing if n.raised_at + n.timeout > now]
        return list(self._passing)

    def next_expiry(self, now: float) -> float | None:
        """Seconds until the next passing notice expires (None when none is showing)."""
        left = [n.raised_at + n.timeout - now for n in self.passing(now)]
        return max(min(left), 0.0) if left else None

    def dismiss(self) -> Notice | None:
        """Dismiss the latest standing error (None when there is none)."""
        return self.errors.pop() if self.errors else None
