"""The frame's top: where you are (experiment, baseline, study, engine) and the stage strip."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.widget import Widget

from tuneplay_tui import format as fmt
from tuneplay_tui.state import STAGE_TITLES, STAGES

if TYPE_CHECKING:
    from tuneplay_tui.state import AppState

ENGINE_STYLE = {"ok": "$success", "warn": "$warning", "error": "$error"}
MARK_STYLE = {"✓": "$success", "●": "$accent"}


class StageHeader(Widget):
    """Two lines: the context line and the stage strip (current stage highlighted)."""

    DEFAULT_CSS = """
    StageHeader { height: 2; width: 1fr; background: $panel; }
    """

    def __init__(self, stage: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stage = stage

    def render(self) -> Content:
        state: AppState = self.app.state  # type: ignore[attr-defined]
        width = max(self.size.width, 20)
        now = self.app.clock()  # type: ignore[attr-defined]
        return Content("\n").join([context_line(state, width, now),
                                   stage_strip(state, self.stage, width)])


def context_line(state: AppState, width: int, now: float | None = None) -> Content:
    """`` tuneplay  exp · baseline v2 · study "x" (running 3/8)      engine ● 2 GPUs · 4 slots``.

    Narrow terminals get a compact form (``exp · v2 · x (running 3/8)   ● 2 GPUs``).
    """
    engine, level = state.engine_line()
    full, short = where_texts(state, now)
    brand = " tuneplay "
    where, right = full, engine
    if len(brand) + 2 + len(where) + len(right) + 2 > width:
        where, right = short, engine.replace("engine ", "").split(" · ")[0]
    room = width - len(brand) - 2 - len(right) - 2
    if len(where) > room:
        where = where[: max(room - 1, 0)] + "…"
    gap = " " * max(width - len(brand) - 2 - len(where) - len(right) - 1, 1)
    return Content.assemble(
        (brand, "bold $text-accent"), "  ", (where, "$foreground"), gap,
        (right, f"bold {ENGINE_STYLE[level]}"), " ",
    )


def where_texts(state: AppState, now: float | None = None) -> tuple[str, str]:
    """The experiment / baseline / study description, in a full and a compact form (with
    the study's ETA while it runs, as of ``now``)."""
    exp = state.experiment()
    if exp is None:
        return "no experiment yet", "no experiment yet"
    base = state.baseline()
    study = state.study()
    full = [exp.experiment.name, f"baseline v{base.version}" if base else "no baseline"]
    short = [exp.experiment.name, f"v{base.version}" if base else "no baseline"]
    if study is not None:
        status = state.study_status()
        eta = state.study_eta(now) if now is not None else None
        if eta is not None:
            status += f" · ETA {fmt.duration(eta)}"
        full.append(f'study "{study.name}" ({status})')
        short.append(f"{study.name} ({status})")
    return " · ".join(full), " · ".join(short)


def stage_strip(state: AppState, current: str, width: int) -> Content:
    """``─1 Baseline ✓──2 Design ✓──3 Running ●──4 Analysis──5 Decision──────``."""
    marks = state.stage_marks()
    pieces: list[Content | str | tuple[str, str]] = []
    used = 0
    for i, stage in enumerate(STAGES, start=1):
        label = f"{i} {STAGE_TITLES[stage]}"
        mark = marks.get(stage, "")
        style = "bold reverse $accent" if stage == current else "$foreground"
        pieces.append(("─", "$foreground-muted"))
        pieces.append((f" {label}", style))
        if mark:
            pieces.append((f" {mark}", style if stage == current else MARK_STYLE[mark]))
        pieces.append((" ", style))
        used += 3 + len(label) + (2 if mark else 0)
    home = " h home " if current != "home" else " home "
    home_style = "bold reverse $accent" if current == "home" else "$foreground-muted"
    fill = max(width - used - len(home) - 1, 1)
    pieces.append(("─" * fill, "$foreground-muted"))
    pieces.append((home, home_style))
    return Content.assemble(*pieces)
