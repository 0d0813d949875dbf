"""The live trial table: rows keyed by trial id, updated cell by cell.

With hundreds of trials a poll must not rebuild the table: :meth:`TrialTable.sync` keeps
the last rendered cells of every row and calls ``update_cell`` only where a cell changed,
adds new rows and removes rows that left the filter. Column widths are fixed, so an update
never triggers a re-measure of every row.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable

from engine.store.base import Trial
from tuneplay_tui import format as fmt

BAR = 6
STEPS = 11
BASE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("trial", "trial", 6), ("state", "state", 9), ("progress", "step / max", BAR + 1 + STEPS),
    ("best", "best", 8), ("at", "best@", 5), ("dev", "dev", 4), ("eta", "ETA", 5),
)
FILTERS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "active": ("RUNNING", "QUEUED", "PAUSED"),
    "finished": ("COMPLETED", "DIVERGED", "FAILED", "CANCELLED"),
    "problems": ("DIVERGED", "FAILED"),
}
KIND_MARK = {"rerun": "↻", "baseline": "b"}


def trial_rate(t: Trial) -> float | None:
    """Steps per second of a running trial, from the engine's own timestamps."""
    if t.started_at is None or t.heartbeat_at is None or t.steps_done <= 0:
        return None
    elapsed = t.heartbeat_at - t.started_at
    return t.steps_done / elapsed if elapsed > 0 else None


def trial_eta(t: Trial) -> float | None:
    rate = trial_rate(t)
    if t.state.value != "RUNNING" or rate is None:
        return None
    return max(t.max_train_steps - t.steps_done, 0) / rate


def row_cells(t: Trial, hp_names: Sequence[str], marked: bool) -> tuple[Any, ...]:
    """The rendered cells of one trial (compared between polls to find changed cells)."""
    state = t.state.value
    frac = t.steps_done / t.max_train_steps if t.max_train_steps else 0.0
    steps = f"{t.steps_done}/{t.max_train_steps}"
    progress = Text(fmt.bar(frac, BAR) + " " + steps.rjust(STEPS),
                    style=fmt.STATE_STYLE.get(state, "") if state == "RUNNING" else "")
    if state == "DIVERGED":
        best = Text(f"nan@{t.steps_done}", style=fmt.RED)
    else:
        best = Text(fmt.metric(t.best_value), style="bold" if state == "COMPLETED" else "")
    mark = KIND_MARK.get(t.kind, " ")
    trial = Text(("●" if marked else " ") + f"{t.id:>4}{mark}",
                 style="bold reverse" if marked else "")
    eta = fmt.duration(trial_eta(t)) if state == "RUNNING" else ""
    at = "" if t.best_step is None else str(t.best_step)
    params = tuple(fmt.value(t.params.get(n)) for n in hp_names)
    return (trial, fmt.state_text(state), progress, best, at, t.device or "—", eta) + params


class TrialTable(DataTable[Any]):
    """A DataTable of trials; call :meth:`configure` once per study, then :meth:`sync`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.hp_names: tuple[str, ...] = ()
        self.filter = "all"
        self.marked: set[int] = set()
        self._cells: dict[int, tuple[Any, ...]] = {}
        self._numbers: dict[int, int] = {}
        self._keys: tuple[str, ...] = ()
        self._study: int | None = None

    def configure(self, study_id: int | None, hp_names: Iterable[str]) -> None:
        """(Re)build the columns for a study's hyperparameters (clears the rows)."""
        names = tuple(hp_names)
        if study_id == self._study and names == self.hp_names and self.columns:
            return
        self._study, self.hp_names = study_id, names
        self.clear(columns=True)
        self._cells.clear()
        self._numbers.clear()
        self.marked.clear()
        for key, label, width in BASE_COLUMNS:
            self.add_column(label, key=key, width=width)
        for name in names:
            self.add_column(_short(name), key=f"hp.{name}", width=max(8, min(len(name), 12)))
        self._keys = tuple(k for k, _, _ in BASE_COLUMNS) + tuple(f"hp.{n}" for n in names)

    def sync(self, trials: Sequence[Trial]) -> int:
        """Bring the rows in line with ``trials``; returns how many cells changed."""
        wanted = FILTERS[self.filter]
        shown = [t for t in trials if wanted is None or t.state.value in wanted]
        ids = {t.id for t in shown}
        for gone in [i for i in self._cells if i not in ids]:
            self.remove_row(str(gone))
            del self._cells[gone]
        changed = 0
        out_of_order = False
        last = max(self._numbers.values(), default=-1)
        for t in shown:
            cells = row_cells(t, self.hp_names, t.id in self.marked)
            old = self._cells.get(t.id)
            if old is None:
                self.add_row(*cells, key=str(t.id))
                out_of_order |= t.number < last
                last = max(last, t.number)
                self._numbers[t.id] = t.number
                changed += len(cells)
            elif old != cells:
                for key, a, b in zip(self._keys, old, cells):
                    if a != b:
                        self.update_cell(str(t.id), key, b)
                        changed += 1
            self._cells[t.id] = cells
        if out_of_order:
            self.sort("trial", key=lambda cell: int(str(cell).strip(" ●↻b") or 0))
        return changed

    def set_filter(self, name: str, trials: Sequence[Trial]) -> None:
        self.filter = name
        self.sync(trials)

    def toggle_mark(self, trial_id: int, trials: Sequence[Trial]) -> None:
        self.marked ^= {trial_id}
        self.sync(trials)

    def selected_id(self) -> int | None:
        """The trial under the cursor."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def targets(self) -> list[int]:
        """The marked trials, or the one under the cursor."""
        if self.marked:
            return sorted(self.marked)
        sel = self.selected_id()
        return [sel] if sel is not None else []

    def select_trial(self, trial_id: int) -> bool:
        """Move the cursor to a trial's row (False if it is not shown)."""
        try:
            row = self.get_row_index(str(trial_id))
        except Exception:
            return False
        self.move_cursor(row=row)
        return True


def _short(name: str) -> str:
    """Column labels for long hyperparameter names: ``learning_rate`` -> ``learning_r…``."""
    return name if len(name) <= 12 else name[:11] + "…"
