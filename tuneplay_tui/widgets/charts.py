"""The chart widget: a PlotextPlot whose canvas is drawn off the UI thread.

plotext rebuilds its whole character canvas on every draw (tens of milliseconds for a
panel of curves, plus decoding its ANSI output into styled cells). A Chart therefore keeps
the last built picture as ready-made lines (strips) and serves them through the line API;
each ``draw_*`` call stores a recipe and a worker thread runs it on the chart's own canvas
(``self.plt``, never the global plotext state), decodes it, and posts the lines back. Only
the newest draw is shown; a resize or a theme change redraws.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.text import Text
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from tuneplay_tui.widgets.plotting import (
    BLUE,
    MAX_POINTS_PER_CELL,
    RGB,
    Line,
    Points,
    Recipe,
    bars_recipe,
    lines_recipe,
    message_recipe,
    points_recipe,
)

__all__ = ["Chart", "Line", "Points"]


class Chart(PlotextPlot):
    """A plot panel; call one ``draw_*`` method to replace what it shows."""

    DEFAULT_CSS = """
    Chart { height: 1fr; min-height: 5; border: round $foreground 25%; padding: 0; }
    Chart:focus { border: round $accent; }
    """

    @dataclass
    class Built(Message):
        """A picture finished building in the worker."""

        generation: int
        picture: list[Strip]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._recipe: Callable[[int], Recipe] | None = None  # the picture, for a height
        self._picture: list[Strip] = []
        self._base: Any = None
        self._generation = 0
        self._canvas_lock = threading.Lock()

    # ------------------------------------------------------------- drawing API
    @property
    def _budget(self) -> int:
        return max(self.size.width, 20) * MAX_POINTS_PER_CELL

    def draw_message(self, message: str) -> None:
        recipe = message_recipe(message)
        self._draw(lambda rows: recipe)

    def draw_lines(self, lines: Sequence[Line], **options: Any) -> None:
        """Curves over steps; options: ``log_y``, ``x_range``, ``clip`` (the y window)."""
        if not any(len(line.x) for line in lines):
            self.draw_message("no curve points yet")
            return
        budget = self._budget
        self._draw(lambda rows: lines_recipe(lines, budget, rows=rows, **options))

    def draw_points(self, groups: Sequence[Points], **options: Any) -> None:
        """Scatter groups; options: ``log_x``, ``x_range``, ``categories``, ``vlines``,
        ``log_y``, ``y_range``, ``y_categories``."""
        self._draw(lambda rows: points_recipe(groups, rows=rows, **options))

    def draw_bars(self, labels: Sequence[str], values: Sequence[float], color: RGB = BLUE,
                  highlight: int | None = None) -> None:
        recipe = bars_recipe(labels, values, color, highlight)
        self._draw(lambda rows: recipe)

    # ------------------------------------------------------------- building
    def _draw(self, recipe: Callable[[int], Recipe]) -> None:
        """Keep how to draw (a recipe for a height: ticks depend on it) and draw it."""
        self._recipe = recipe
        self._build()

    def _build(self) -> None:
        width, height = self.size.width, self.size.height
        if self._recipe is None or not self.is_mounted or width <= 0 or height <= 0:
            return
        self._generation += 1
        generation, recipe = self._generation, self._recipe(height)
        theme = self._get_plotext_theme_name(self.app.theme)

        def job() -> None:
            with self._canvas_lock:
                plt = self.plt
                plt.clear_figure()
                plt.plotsize(width, height)
                plt._set_size(width, height)
                plt.theme(theme)
                recipe(plt)
                ansi = plt.build()
            self.post_message(self.Built(generation, to_strips(ansi, width)))

        self.run_worker(job, thread=True, group="chart", name="chart", exit_on_error=False)

    def on_chart_built(self, message: Chart.Built) -> None:
        message.stop()
        if message.generation == self._generation:
            self._picture = message.picture
            self.refresh()

    def on_resize(self) -> None:
        self._build()

    def _register_theme(self, app_theme_name: str) -> None:
        super()._register_theme(app_theme_name)
        self._build()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._base is None:  # rich_style walks the DOM: once per style change, not per line
            self._base = self.rich_style
        if 0 <= y < len(self._picture):
            return self._picture[y].crop_extend(0, width, self._base)
        return Strip.blank(width, self._base)


def to_strips(ansi: str, width: int) -> list[Strip]:
    """plotext's ANSI output as one Strip per line (done off the UI thread)."""
    console = Console(width=max(width, 1), file=io.StringIO(), color_system="truecolor",
                      legacy_windows=False, force_terminal=True)
    strips = []
    for line in Text.from_ansi(ansi).split("\n", allow_blank=True):
        line.no_wrap = True
        segments = [s for s in line.render(console) if s.text != "\n"]
        strips.append(Strip(segments, line.cell_len))
    return strips
