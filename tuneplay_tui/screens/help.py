"""``?``: the playbook idea behind the current screen, and its keys."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

GLOBAL_KEYS = (
    ("1-5", "go to a stage: baseline, design, running, analysis, decision"),
    ("h", "home: experiments and studies"),
    ("?", "this help"),
    ("esc", "dismiss the error shown above the footer (errors stay until dismissed)"),
    ("ctrl+p", "command palette: every action, every study"),
    ("q", "quit the app (the engine and its trials keep running)"),
)


def keys_markdown(screen: Any) -> str:
    """A key table from the screen's own bindings (so help never drifts from the code)."""
    rows = []
    for binding in getattr(screen, "BINDINGS", []):
        key, description = getattr(binding, "key", None), getattr(binding, "description", "")
        if key and description:
            rows.append((key.replace(",", " / "), description))
    rows += list(GLOBAL_KEYS)
    table = "\n".join(f"| `{k}` | {d} |" for k, d in rows)
    return f"| key | does |\n|---|---|\n{table}"


class HelpScreen(ModalScreen[None]):
    """Help for one screen: its playbook idea (``screen.HELP``) and its keys."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, screen: Any) -> None:
        super().__init__(classes="dialog-screen")
        title = getattr(screen, "TITLE_TEXT", "") or type(screen).__name__
        self.text = (f"# {title}\n\n{getattr(screen, 'HELP', '').strip()}\n\n"
                     f"## Keys\n\n{keys_markdown(screen)}\n")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(self.text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
