"""The live trial table: a line-API widget that re-renders only the rows that changed.

Textual's DataTable re-renders every visible row whenever any cell changes, and renders
each cell through Rich's layout engine; with hundreds of trials all running, that is most
of a frame. This table keeps one cached :class:`~textual.strip.Strip` per trial: a poll
that changes 500 rows re-renders only the ~30 rows on screen, each in microseconds.
Columns have fixed widths; rows keep trial order; the header stays put when scrolling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.status import step_rate
from engine.store.base import Trial
from tuneplay_tui import format as fmt

BAR = 6
STEPS = 11
BASE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("trial", "trial", 6), ("state", "state", 9), ("progress", "step / max", BAR + 1 + STEPS),
    ("best", "best", 8), ("at", "best@", 5), ("dev", "dev", 4), ("eta", "ETA", 5),
)
HOST_WIDTH = 12  # "host/device" when engines on many hosts share the store
FILTERS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "active": ("RUNNING", "QUEUED", "PAUSED"),
    "finished": ("COMPLETED", "DIVERGED", "FAILED", "CANCELLED"),
    "problems": ("DIVERGED", "FAILED"),
}
KIND_MARK = {"rerun": "↻", "baseline": "b"}
Cell = tuple[str, str]  # text, Rich style string
_STYLES: dict[str, Style] = {}


def style_of(spec: str) -> Style:
    """Parsed Rich styles, cached (a handful of distinct strings)."""
    if spec not in _STYLES:
        _STYLES[spec] = Style.parse(spec) if spec else Style()
    return _STYLES[spec]


def trial_eta(t: Trial, now: float | None = None) -> float | None:
    """Seconds a running trial still needs at its measured rate (the one the study's ETA
    uses, so the two never disagree), less the time since its last heartbeat."""
    rate = step_rate(t)
    if t.state.value != "RUNNING" or rate is None:
        return None
    stale = max(now - t.heartbeat_at, 0.0) if now is not None and t.heartbeat_at else 0.0
    return max(max(t.max_train_steps - t.steps_done, 0) / rate - stale, 0.0)


def row_cells(t: Trial, hp_names: Sequence[str], marked: bool,
              now: float | None = None, hosts: bool = False) -> tuple[Cell, ...]:
    """The cells of one trial (compared between polls to find the rows that changed)."""
    state = t.state.value
    frac = t.steps_done / t.max_train_steps if t.max_train_steps else 0.0
    steps = f"{t.steps_done}/{t.max_train_steps}"
    running = fmt.STATE_STYLE["RUNNING"] if state == "RUNNING" else ""
    if state == "DIVERGED":
        best: Cell = (f"nan@{t.steps_done}", fmt.RED)
    else:
        best = (fmt.metric(t.best_value), "bold" if state == "COMPLETED" else "")
    trial = (("●" if marked else " ") + f"{t.id:>4}{KIND_MARK.get(t.kind, ' ')}",
             "bold reverse" if marked else "")
    eta = fmt.duration(trial_eta(t, now)) if state == "RUNNING" else ""
    at = "" if t.best_step is None else str(t.best_step)
    params = tuple((fmt.value(t.params.get(n)), "") for n in hp_names)
    return (trial, (fmt.STATE_WORD.get(state, state.lower()), fmt.STATE_STYLE.get(state, "")),
            (fmt.bar(frac, BAR) + " " + steps.rjust(STEPS), running), best, (at, ""),
            (where(t, hosts), ""), (eta, "")) + params


def where(t: Trial, hosts: bool) -> str:
    """The trial's device; with engines on many hosts, ``host/device`` (``b/gpu0``)."""
    if hosts and t.host:
        return f"{t.host}/{t.device or '—'}"
    return t.device or "—"


@dataclass
class _Column:
    key: str
    label: str
    width: int


class TrialTable(ScrollView, can_focus=True):
    """Trials of one study, one row each; call :meth:`configure`, then :meth:`sync`."""

    DEFAULT_CSS = """
    TrialTable { height: 1fr; }
    TrialTable > .trial-table--header { text-style: bold; color: $text-muted; }
    TrialTable > .trial-table--cursor { background: $block-cursor-blurred-background; }
    TrialTable:focus > .trial-table--cursor { background: $block-cursor-background;
                                              color: $block-cursor-foreground; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"trial-table--header", "trial-table--cursor"}
    BINDINGS: ClassVar[list[Any]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, init=False)
    """The row under the cursor (index into the shown rows)."""

    class RowHighlighted(Message):
        """The cursor moved to another trial."""

        def __init__(self, table: TrialTable, trial_id: int | None) -> None:
            super().__init__()
            self.table, self.trial_id = table, trial_id

        @property
        def control(self) -> TrialTable:
            return self.table

    class RowSelected(Message):
        """Enter (or a double click) on a trial."""

        def __init__(self, table: TrialTable, trial_id: int) -> None:
            super().__init__()
            self.table, self.trial_id = table, trial_id

        @property
        def control(self) -> TrialTable:
            return self.table

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hp_names: tuple[str, ...] = ()
        self.hosts = False
        self.filter = "all"
        self.marked: set[int] = set()
        self.columns: list[_Column] = []
        self._order: list[int] = []
        self._index: dict[int, int] = {}
        self._cells: dict[int, tuple[Cell, ...]] = {}
        self._strips: dict[int, Strip] = {}
        self._header: Strip | None = None
        self._styles: tuple[Style, Style, Style] | None = None
        self._study: int | None = None

    # ------------------------------------------------------------- data
    def configure(self, study_id: int | None, hp_names: Iterable[str],
                  hosts: bool = False) -> None:
        """(Re)build the columns for a study's hyperparameters (clears the rows); with
        ``hosts`` (engines on many hosts) the device column names the host too."""
        names = tuple(hp_names)
        if (study_id == self._study and names == self.hp_names and self.columns
                and hosts == self.hosts):
            return
        self._study, self.hp_names, self.hosts = study_id, names, hosts
        self.columns = [_Column(k, label, w) if k != "dev" or not hosts
                        else _Column(k, "host/dev", HOST_WIDTH) for k, label, w in BASE_COLUMNS]
        self.columns += [_Column(f"hp.{n}", n if len(n) <= 12 else n[:11] + "…",
                                 max(8, min(len(n), 12))) for n in names]
        self._order, self._index, self._cells = [], {}, {}
        self.marked.clear()
        self._invalidate()

    def sync(self, trials: Sequence[Trial], now: float | None = None) -> int:
        """Bring the rows in line with ``trials`` (ETAs as of ``now``); returns how many
        rows changed."""
        wanted = FILTERS[self.filter]
        shown = [t for t in trials if wanted is None or t.state.value in wanted]
        selected = self.selected_id()
        order = [t.id for t in sorted(shown, key=lambda t: t.number)]
        changed = 0
        for t in shown:
            cells = row_cells(t, self.hp_names, t.id in self.marked, now, self.hosts)
            if self._cells.get(t.id) != cells:
                self._cells[t.id] = cells
                self._strips.pop(t.id, None)
                changed += 1
        if order != self._order:
            for gone in set(self._order) - set(order):
                self._cells.pop(gone, None)
                self._strips.pop(gone, None)
            self._order = order
            self._index = {tid: i for i, tid in enumerate(order)}
            self.virtual_size = Size(self._width(), len(order) + 1)
            changed += 1
            self._restore_cursor(selected)
        if changed:
            self.refresh()
        return changed

    def _restore_cursor(self, selected: int | None) -> None:
        if selected is not None and selected in self._index:
            self.set_reactive(TrialTable.cursor_row, self._index[selected])
        else:
            self.set_reactive(TrialTable.cursor_row,
                              min(self.cursor_row, max(len(self._order) - 1, 0)))

    def set_filter(self, name: str, trials: Sequence[Trial]) -> None:
        self.filter = name
        self.sync(trials)

    def toggle_mark(self, trial_id: int, trials: Sequence[Trial]) -> None:
        self.marked ^= {trial_id}
        self.sync(trials)

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def row_ids(self) -> list[int]:
        return list(self._order)

    def cell_text(self, trial_id: int, key: str) -> str:
        """The text shown in one cell (for tests and the command palette)."""
        i = next(i for i, c in enumerate(self.columns) if c.key == key)
        return self._cells[trial_id][i][0]

    def selected_id(self) -> int | None:
        """The trial under the cursor."""
        if not self._order:
            return None
        return self._order[min(self.cursor_row, len(self._order) - 1)]

    def targets(self) -> list[int]:
        """The marked trials, or the one under the cursor."""
        if self.marked:
            return sorted(self.marked)
        sel = self.selected_id()
        return [sel] if sel is not None else []

    def select_trial(self, trial_id: int) -> bool:
        """Move the cursor to a trial's row (False if it is not shown)."""
        if trial_id not in self._index:
            return False
        self.move_cursor(self._index[trial_id])
        return True

    def move_cursor(self, row: int) -> None:
        self.cursor_row = min(max(row, 0), max(len(self._order) - 1, 0))

    # ------------------------------------------------------------- keys and mouse
    def watch_cursor_row(self) -> None:
        self.refresh()  # visible rows come from the strip cache; only two change
        self._scroll_to_cursor()
        self.post_message(self.RowHighlighted(self, self.selected_id()))

    def _scroll_to_cursor(self) -> None:
        # rows below the header and above a horizontal scrollbar (a narrow table has one)
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(self.size.height - 2, 1))

    def action_jump(self, where: int) -> None:
        self.move_cursor(0 if where == 0 else len(self._order) - 1)

    def action_select(self) -> None:
        sel = self.selected_id()
        if sel is not None:
            self.post_message(self.RowSelected(self, sel))

    def on_click(self, event: events.Click) -> None:
        row = event.y - 1 + self.scroll_offset.y
        if event.y >= 1 and 0 <= row < len(self._order):
            self.move_cursor(row)
            if event.chain >= 2:
                self.action_select()

    # ------------------------------------------------------------- rendering
    def _width(self) -> int:
        return sum(c.width + 2 for c in self.columns)

    def _invalidate(self) -> None:
        self._strips.clear()
        self._header = None
        self.virtual_size = Size(self._width(), len(self._order) + 1)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._header = None
        self._styles = None

    def _base_styles(self) -> tuple[Style, Style, Style]:
        """(base, header, cursor) styles; rich_style walks the DOM, so once per change."""
        if self._styles is None:
            base = self.rich_style
            self._styles = (base, base + self.get_component_rich_style("trial-table--header"),
                            base + self.get_component_rich_style("trial-table--cursor"))
        return self._styles

    def on_resize(self) -> None:
        self._scroll_to_cursor()

    def _segments(self, cells: Sequence[Cell], base: Style) -> list[Segment]:
        out = []
        for col, (text, spec) in zip(self.columns, cells):
            cell = " " + text[: col.width].ljust(col.width) + " "
            out.append(Segment(cell, base + style_of(spec) if spec else base))
        return out

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base, header, under = self._base_styles()
        if y == 0:
            if self._header is None:
                labels = tuple((c.label, "") for c in self.columns)
                self._header = Strip(self._segments(labels, header))
            return self._header.crop_extend(scroll_x, scroll_x + width, base)
        row = scroll_y + y - 1
        if not 0 <= row < len(self._order):
            return Strip.blank(width, base)
        tid = self._order[row]
        if row == self.cursor_row:
            strip = Strip(self._segments(self._cells[tid], under))
            return strip.crop_extend(scroll_x, scroll_x + width, under)
        cached = self._strips.get(tid)
        if cached is None:
            cached = self._strips[tid] = Strip(self._segments(self._cells[tid], base))
        return cached.crop_extend(scroll_x, scroll_x + width, base)
