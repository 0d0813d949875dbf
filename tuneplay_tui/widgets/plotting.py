"""What the charts draw: series types, palette, ticks, thinning, and plotext recipes.

A recipe is a function of a plotext canvas (``plt``); the :class:`~tuneplay_tui.widgets.
charts.Chart` widget runs it on its own canvas in a worker thread. Long curves are thinned
to a few points per terminal cell (plotext's cost grows with points, the picture does not)
and clamped to the y window. Colors are mid-tone so they read on dark and light themes;
markers differ too, so nothing relies on color alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


def clamp(points: list[tuple[float, float]], low: float, high: float) -> list[tuple[float, float]]:
    """Points limited to the y window: leading off-scale points dropped (the early descent),
    later ones pinned to the edge. plotext interpolates lines pixel by pixel, so a segment
    reaching far outside the window would cost time and draw nothing useful."""
    start = next((i for i, (_, y) in enumerate(points) if y <= high), len(points))
    start = max(start - 1, 0)
    return [(x, min(max(y, low), high)) for x, y in points[start:]]


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Decade ticks inside [low, high] (plus the ends when there are few)."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = [10.0**k for k in range(lo, hi + 1) if low <= 10.0**k <= high]
    if len(ticks) < 2:
        ticks = sorted({low, *ticks, high})
    return ticks, [fmt_value(t) for t in ticks]


Recipe = Callable[[Any], None]


def message_recipe(message: str) -> Recipe:
    """An empty plot with a one-line explanation in place of the data."""
    def draw(plt: Any) -> None:
        plt.frame(False)
        plt.xaxes(False, False)
        plt.yaxes(False, False)
        plt.title(message)
    return draw


def lines_recipe(lines: Sequence[Line], budget: int, *, log_y: bool = False,
                 x_range: tuple[float, float] | None = None, clip: bool = True) -> Recipe:
    """Curves over steps (left axis; ``right=True`` lines use the right axis)."""
    per_line = max(budget // max(len(lines), 1), 40)
    window = clip_range([y for ln in lines if not ln.right for y in ln.y]) if clip else None
    series = []
    for line in lines:
        x, y = thin(line.x, line.y, per_line)
        keep = [(a, b) for a, b in zip(x, y) if b is not None and math.isfinite(b)]
        if window is not None and not line.right:
            keep = clamp(keep, *_padded(window, False, 0.05))
        if keep:
            xs, ys = zip(*keep)
            series.append((list(xs), list(ys), line.color, "right" if line.right else "left"))
    xs_all = [x for xs, _, _, _ in series for x in xs]
    if not xs_all:
        return message_recipe("no curve points yet")
    lo, hi = x_range or (min(xs_all), max(xs_all))

    def draw(plt: Any) -> None:
        for xs, ys, color, side in series:
            plt.plot(xs, ys, marker="braille", color=color, yside=side)
        if log_y:
            plt.yscale("log")
        plt.xticks(*nice_ticks(lo, hi))
        if x_range is not None:
            plt.xlim(*x_range)
        if window is not None and not log_y:
            plt.ylim(*_padded(window, False, 0.05))
    return draw


def points_recipe(groups: Sequence[Points], *, log_x: bool = False,
                  x_range: tuple[float, float] | None = None,
                  categories: Sequence[Any] | None = None, vlines: Sequence[float] = (),
                  y_range: tuple[float, float] | None = None, log_y: bool = False,
                  y_categories: Sequence[Any] | None = None) -> Recipe:
    """Scatter groups (later groups drawn on top); categorical axes use indices."""
    groups = [Points(list(g.x), list(g.y), g.marker, g.color) for g in groups if len(g.x)]

    def draw(plt: Any) -> None:
        for g in groups:
            plt.scatter(g.x, g.y, marker=g.marker, color=g.color)
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
    return draw


def bars_recipe(labels: Sequence[str], values: Sequence[float], color: RGB = BLUE,
                highlight: int | None = None) -> Recipe:
    """Vertical bars (a histogram); ``highlight`` colors one bar differently."""
    colors = [AMBER if i == highlight else color for i in range(len(values))]

    def draw(plt: Any) -> None:
        plt.bar(list(labels), list(values), color=colors, width=0.8)
    return draw
