"""Small modal dialogs: a one-line prompt, a yes/no confirmation, a form of fields.

Each dismisses with its answer (None when cancelled with escape), so callers use
``push_screen(dialog, callback)`` and never block the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value; enter accepts, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, hint: str = "", value: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.hint, self.value = title, hint, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            if self.hint:
                yield Static(self.hint, classes="dialog-hint")
            yield Input(self.value, id="prompt-input", select_on_focus=True)
            yield Static("enter accept · escape cancel", classes="dialog-keys")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question about something consequential (adopting, cancelling many)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-hint")
            yield Static("y yes · n / escape no", classes="dialog-keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class FormScreen(ModalScreen[dict[str, str] | None]):
    """Several labelled inputs; enter on the last (or ctrl+s) submits them all."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(self, title: str, fields: Sequence[tuple[str, str, str]], hint: str = "") -> None:
        """``fields``: (key, label, initial value)."""
        super().__init__(classes="dialog-screen")
        self.title_text, self.fields, self.hint = title, list(fields), hint

    def compose(self) -> ComposeResult:
        # scrolls, so every field stays reachable at 80x24 (focus scrolls it into view)
        with VerticalScroll(classes="dialog wide", can_focus=False):
            yield Label(self.title_text, classes="dialog-title")
            if self.hint:
                yield Static(self.hint, classes="dialog-hint")
            for key, label, value in self.fields:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(value, id=f"field-{key}")
            yield Static("tab next field · enter on the last (or ctrl+s) submits · escape cancel",
                         classes="dialog-keys")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        last = f"field-{self.fields[-1][0]}"
        if event.input.id == last:
            self.action_submit()
        else:
            self.focus_next()

    def action_submit(self) -> None:
        self.dismiss({k: self.query_one(f"#field-{k}", Input).value for k, _, _ in self.fields})

    def action_cancel(self) -> None:
        self.dismiss(None)


class OpenStudyScreen(ModalScreen[str | None]):
    """Pick a study file: the ``studies/*.toml`` of the project, or type a path."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, folder: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.folder = folder

    def compose(self) -> ComposeResult:
        files = sorted(self.folder.glob("*.toml")) if self.folder.is_dir() else []
        with Vertical(classes="dialog wide"):
            yield Label("Open a study file", classes="dialog-title")
            yield Static(f"study files in {self.folder}" if files else
                         f"no study files in {self.folder}: type a path", classes="dialog-hint")
            yield OptionList(*[Option(p.name, id=str(p)) for p in files], id="study-files")
            yield Input(placeholder="path/to/study.toml", id="study-path")
            yield Static("enter open · tab switch list/path · escape cancel", classes="dialog-keys")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
