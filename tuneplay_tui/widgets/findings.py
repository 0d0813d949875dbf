"""The findings list: one wrapped sentence per finding, warn first, navigable by keyboard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.content import Content
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tuneplay_tui.format import SEVERITY_GLYPH, SEVERITY_VAR


def finding_prompt(finding: Any) -> Content:
    """``▲ learning_rate: 3 of the top 4 trials sit ...`` with a theme-aware glyph color."""
    glyph = SEVERITY_GLYPH.get(finding.severity, "·")
    style = SEVERITY_VAR.get(finding.severity, "$foreground")
    return Content.assemble((glyph, f"bold {style}"), " ", finding.message)


class FindingsList(OptionList):
    """Findings of a report; the highlighted one drives the plots beside it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.findings: tuple[Any, ...] = ()

    def set_findings(self, findings: Sequence[Any]) -> None:
        """Replace the list, keeping the highlighted finding when it is still there."""
        keep = self.current()
        same = tuple(findings) == self.findings
        self.findings = tuple(findings)
        if same:
            return
        self.clear_options()
        self.add_options([Option(finding_prompt(f), id=f"f{i}") for i, f in enumerate(findings)])
        if not self.findings:
            return
        index = 0
        if keep is not None:
            index = next((i for i, f in enumerate(self.findings)
                          if (f.kind, f.subject) == (keep.kind, keep.subject)), 0)
        self.highlighted = index

    def current(self) -> Any | None:
        """The highlighted finding (None when the list is empty)."""
        i = self.highlighted
        if i is None or not 0 <= i < len(self.findings):
            return None
        return self.findings[i]

    def select_kind(self, kind: str) -> bool:
        """Highlight the first finding of ``kind`` (True if there is one)."""
        for i, f in enumerate(self.findings):
            if f.kind == kind:
                self.highlighted = i
                return True
        return False
