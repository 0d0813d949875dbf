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

from tuneplay_tui.format import tick as fmt_tick
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
        return [lo], [fmt_tick(lo)]
    mag = 10 ** math.floor(math.log10((hi - lo) / max(n - 1, 1)))
    steps = [m * mag * k for k in (0.1, 1, 10) for m in (1, 2, 2.5, 5)]
    def score(ticks: list[float]) -> tuple[bool, int]:
        return len(ticks) < 2, abs(len(ticks) - n)

    best: list[float] = []
    for step in sorted(steps, reverse=True):  # the coarsest step whose count is nearest n
        start = math.ceil(lo / step - 1e-9) * step
        ticks = [_clean(start + i * step) for i in range(int((hi - start) / step + 1e-9) + 1)
                 if start + i * step <= hi * (1 + 1e-9) + 1e-12]
        if not best or score(ticks) < score(best):
            best = ticks
    return best, [fmt_tick(t) for t in best]


def _clean(v: float) -> float:
    """Float noise off a tick (0.30000000000000004 -> 0.3)."""
    return float(f"{v:.12g}")


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


LOG_MANTISSAS = ((1,), (1, 5), (1, 2, 5))  # decades first; 2 and 5 only when they are few


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks of a log axis at powers of ten inside [low, high]; when fewer than three fit,
    at 1, 5 (then 1, 2, 5) times powers of ten; a range narrower than that gets round
    linear ticks. Never the odd values (0.0009, 0.0041) plotext picks by itself."""
    if not (0 < low < high) or not math.isfinite(high):
        return nice_ticks(low, high)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks: list[float] = []
    for mantissas in LOG_MANTISSAS:
        ticks = [_clean(m * 10.0**k) for k in range(first, last + 1) for m in mantissas
                 if low * (1 - 1e-9) <= m * 10.0**k <= high * (1 + 1e-9)]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:
        return nice_ticks(low, high, 3)
    return ticks, [fmt_tick(t) for t in ticks]


Recipe = Callable[[Any], None]


def message_recipe(message: str) -> Recipe:
    """An empty plot with a one-line explanation in place of the data."""
    def draw(plt: Any) -> None:
        plt.frame(False)
        plt.xaxes(False, False)
        plt.yaxes(False, False)
        plt.title(message)
    return draw


def y_tick_count(rows: int) -> int:
    """How many y ticks fit a plot ``rows`` tall without two landing on one row."""
    return max(2, min(5, (rows - 2) // 2))


def lines_recipe(lines: Sequence[Line], budget: int, *, log_y: bool = False,
                 x_range: tuple[float, float] | None = None, clip: bool = True,
                 rows: int = 12) -> Recipe:
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
    left = [y for _, ys, _, side in series if side == "left" for y in ys]
    y_lo, y_hi = window or ((min(left), max(left)) if left else (0.0, 1.0))

    def draw(plt: Any) -> None:
        for xs, ys, color, side in series:
            plt.plot(xs, ys, marker="braille", color=color, yside=side)
        if log_y:
            plt.yscale("log")
            if 0 < y_lo < y_hi:
                plt.yticks(*log_ticks(y_lo, y_hi))
        elif y_hi > y_lo:
            plt.yticks(*nice_ticks(y_lo, y_hi, y_tick_count(rows)))
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
                  y_categories: Sequence[Any] | None = None, rows: int = 12) -> Recipe:
    """Scatter groups (later groups drawn on top); categorical axes use indices. Every
    axis gets round ticks: powers of ten (and 2, 5) on a log axis, 1-2-2.5-5 steps else."""
    groups = [Points(list(g.x), list(g.y), g.marker, g.color) for g in groups if len(g.x)]
    xs = [float(x) for g in groups for x in g.x if _finite(x)]
    ys = [float(y) for g in groups for y in g.y if _finite(y)]
    x_span = x_range or ((min(xs), max(xs)) if xs else None)
    y_span = y_range or ((min(ys), max(ys)) if ys else None)

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
            if x_span is not None:
                plt.xticks(*log_ticks(*x_span))
        elif x_span is not None and x_span[1] > x_span[0]:
            plt.xticks(*nice_ticks(*x_span))
        if x_range is not None and categories is None:
            plt.xlim(*_padded(x_range, log_x, 0.03))
        if y_categories is not None:
            plt.yticks(list(range(len(y_categories))), [fmt_value(c) for c in y_categories])
            plt.ylim(-0.6, len(y_categories) - 0.4)
        elif log_y:
            plt.yscale("log")
            if y_span is not None:
                plt.yticks(*log_ticks(*y_span))
        elif y_span is not None and y_span[1] > y_span[0]:
            plt.yticks(*nice_ticks(*y_span, y_tick_count(rows)))
        if y_range is not None and y_categories is None:
            plt.ylim(*_padded(y_range, log_y, 0.05))
    return draw


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bars_recipe(labels: Sequence[str], values: Sequence[float], color: RGB = BLUE,
                highlight: int | None = None) -> Recipe:
    """Vertical bars (a histogram); ``highlight`` colors one bar differently."""
    colors = [AMBER if i == highlight else color for i in range(len(values))]

    def draw(plt: Any) -> None:
        plt.bar(list(labels), list(values), color=colors, width=0.8)
    return draw
