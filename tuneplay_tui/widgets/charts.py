"""Charts: a PlotextPlot that owns its canvas (``self.plt``), with the playbook's plots.

Every drawing method clears the figure, draws, and refreshes; nothing touches the global
``plotext`` state. Long curves are thinned to a few points per terminal cell before
plotting (plotext's cost grows with points, the picture does not). Colors are mid-tone so
they read on dark and light themes; markers differ too, so nothing relies on color alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from textual_plotext import PlotextPlot

from tuneplay_tui.format import value as fmt_value

RGB = tuple[int, int, int]
PALETTE: tuple[RGB, ...] = (
    (58, 123, 213), (46, 158, 79), (201, 130, 0), (155, 89, 182), (0, 150, 160),
    (214, 69, 69),
)
BLUE, GREEN, AMBER, VIOLET, TEAL, RED = PALETTE
MUTED: RGB = (138, 138, 138)
MAX_POINTS_PER_CELL = 2


@dataclass(frozen=True)
class Line:
    """One curve: a label for the legend, steps, values, color, and which y axis."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: RGB = BLUE
    right: bool = False


@dataclass(frozen=True)
class Points:
    """A set of scatter points drawn with one marker and color."""

    x: Sequence[Any]
    y: Sequence[float]
    marker: str = "•"
    color: RGB = BLUE


def hex_color(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def legend(items: Sequence[tuple[str, str, RGB]]) -> str:
    """Markup for a border subtitle: ``━ #12  ━ #17  x diverged``."""
    return "  ".join(f"[{hex_color(c)}]{m}[/] {label}" for m, label, c in items)


def thin(x: Sequence[float], y: Sequence[float], limit: int) -> tuple[list[float], list[float]]:
    """At most ``limit`` points, evenly strided, always keeping the last one."""
    n = len(x)
    if n <= limit or limit < 2:
        return list(x), list(y)
    stride = math.ceil(n / limit)
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [x[i] for i in idx], [y[i] for i in idx]


def _padded(bounds: tuple[float, float], log: bool, share: float) -> tuple[float, float]:
    """Axis limits with a margin; plotext wants log10 limits on a log axis."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if log:
        a, b = math.log10(lo), math.log10(hi)
        pad = (b - a) * share
        return a - pad, b + pad
    pad = (hi - lo) * share or 1.0
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], list[str]]:
    """Round-number ticks (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo], [fmt_value(lo)]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]
    labels = [str(int(t)) if float(t).is_integer() else fmt_value(t) for t in ticks]
    return ticks, labels


def clip_range(values: Sequence[float], upper: float = 0.9) -> tuple[float, float] | None:
    """A y range that shows where curves settle: min .. the 90th percentile (early spikes cut)."""
    ys = sorted(v for v in values if v is not None and math.isfinite(v))
    if len(ys) < 4:
        return None
    lo, top = ys[0], ys[min(int(len(ys) * upper), len(ys) - 1)]
    return (lo, top) if top > lo else None


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Decade ticks inside [low, high] (plus the ends when there are few)."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = [10.0**k for k in range(lo, hi + 1) if low <= 10.0**k <= high]
    if len(ticks) < 2:
        ticks = sorted({low, *ticks, high})
    return ticks, [fmt_value(t) for t in ticks]


class Chart(PlotextPlot):
    """A plot panel; call one ``draw_*`` method to replace what it shows."""

    DEFAULT_CSS = """
    Chart { height: 1fr; min-height: 5; border: round $panel-lighten-2; padding: 0; }
    Chart:focus { border: round $accent; }
    """

    def _fresh(self) -> Any:
        plt = self.plt
        plt.clear_figure()
        plt.frame(True)
        return plt

    @property
    def _budget(self) -> int:
        return max(self.size.width, 20) * MAX_POINTS_PER_CELL

    def draw_message(self, message: str) -> None:
        """An empty plot with a one-line explanation in place of the data."""
        plt = self._fresh()
        plt.frame(False)
        plt.xaxes(False, False)
        plt.yaxes(False, False)
        plt.title(message)
        self.refresh()

    def draw_lines(self, lines: Sequence[Line], *, xlabel: str = "", log_y: bool = False,
                   x_range: tuple[float, float] | None = None, clip: bool = True) -> None:
        """Curves over steps (left axis; ``right=True`` lines use the right axis)."""
        if not any(len(line.x) for line in lines):
            self.draw_message("no curve points yet")
            return
        plt = self._fresh()
        per_line = max(self._budget // max(len(lines), 1), 40)
        for line in lines:
            if not len(line.x):
                continue
            x, y = thin(line.x, line.y, per_line)
            keep = [(a, b) for a, b in zip(x, y) if b is not None and math.isfinite(b)]
            if not keep:
                continue
            xs, ys = zip(*keep)
            plt.plot(list(xs), list(ys), marker="braille", color=line.color,
                     yside="right" if line.right else "left")
        if log_y:
            plt.yscale("log")
        xs_all = [x for line in lines for x in line.x]
        lo, hi = x_range or (min(xs_all), max(xs_all))
        plt.xticks(*nice_ticks(lo, hi))
        if x_range is not None:
            plt.xlim(*x_range)
        y_range = clip_range([y for line in lines if not line.right for y in line.y]) if clip else None
        if y_range is not None and not log_y:
            plt.ylim(*_padded(y_range, False, 0.05))
        if xlabel:
            plt.xlabel(xlabel)
        self.refresh()

    def draw_points(self, groups: Sequence[Points], *, log_x: bool = False,
                    x_range: tuple[float, float] | None = None,
                    categories: Sequence[Any] | None = None,
                    vlines: Sequence[float] = (), ylabel: str = "",
                    y_range: tuple[float, float] | None = None, log_y: bool = False,
                    y_categories: Sequence[Any] | None = None) -> None:
        """Scatter groups (later groups drawn on top); categorical x uses indices."""
        plt = self._fresh()
        for g in groups:
            if len(g.x):
                plt.scatter(list(g.x), list(g.y), marker=g.marker, color=g.color)
        for v in vlines:
            plt.vline(v, color=MUTED)
        if categories is not None:
            plt.xticks(list(range(len(categories))), [fmt_value(c) for c in categories])
            plt.xlim(-0.6, len(categories) - 0.4)
        elif log_x:
            plt.xscale("log")
            if x_range is not None:
                plt.xticks(*log_ticks(*x_range))
        if x_range is not None and categories is None:
            plt.xlim(*_padded(x_range, log_x, 0.03))
        if y_categories is not None:
            plt.yticks(list(range(len(y_categories))), [fmt_value(c) for c in y_categories])
            plt.ylim(-0.6, len(y_categories) - 0.4)
        elif log_y:
            plt.yscale("log")
            if y_range is not None:
                plt.yticks(*log_ticks(*y_range))
        if y_range is not None and y_categories is None:
            plt.ylim(*_padded(y_range, log_y, 0.05))
        if ylabel:
            plt.ylabel(ylabel)
        self.refresh()

    def draw_bars(self, labels: Sequence[str], values: Sequence[float], color: RGB = BLUE,
                  highlight: int | None = None) -> None:
        """Vertical bars (a histogram); ``highlight`` colors one bar differently."""
        plt = self._fresh()
        colors = [AMBER if i == highlight else color for i in range(len(values))]
        plt.bar(list(labels), list(values), color=colors, width=0.8)
        self.refresh()
