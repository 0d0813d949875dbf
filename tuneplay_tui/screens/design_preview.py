"""The design screen's preview: the points a study will try, two dimensions at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.space import ChoiceParam
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.plotting import BLUE, VIOLET, Points, legend


def _axis(param: Any, values: Sequence[Any], n: int) -> tuple[list[Any], dict[str, Any]]:
    """Plot coordinates for one dimension and the draw_points options for it."""
    if isinstance(param, ChoiceParam):
        cats = list(param.values)
        xs = [cats.index(v) + ((i * 7) % 9 - 4) / 24.0 for i, v in enumerate(values)]
        return xs, {"categories": cats}
    return list(values), {"log": param.is_log, "range": (param.low, param.high)}


def draw_preview(chart: Chart, spec: Any, points: Sequence[dict[str, Any]], pair: int) -> int:
    """Scatter of the first searched dimensions (``pair`` cycles which); returns ``pair``."""
    dims = list(spec.nuisance) or list(spec.searched)
    n = len(points)
    if spec.search == "bayesian":  # only the initial design is known before results
        tail_b = " (initial design: later points follow the results)"
    else:
        tail_b = ""
    sci = ", ".join(f"{p.name} × {len(getattr(p, 'values', ()))}" for p in spec.scientific)
    tail = (f" · each with {sci}" if sci and spec.scientific_mode == "per_value" else "") + tail_b
    if not dims:
        chart.border_title = f"preview: {n} trial(s)"
        chart.border_subtitle = ""
        chart.draw_message("nothing is searched: every hyperparameter is fixed")
        return 0
    if len(dims) == 1:
        p = dims[0]
        xs, opts = _axis(p, [pt[p.name] for pt in points], n)
        chart.border_title = f"preview: {n} trials · {p.name}{tail}"
        chart.draw_points([Points(xs, list(range(n)), "•", BLUE)], log_x=opts.get("log", False),
                          x_range=opts.get("range"), categories=opts.get("categories"))
        chart.border_subtitle = legend([("•", "trial (y: order)", BLUE)])
        return 0
    pairs = [(a, b) for i, a in enumerate(dims) for b in dims[i + 1:]]
    pair %= len(pairs)
    px, py = pairs[pair]
    xs, ox = _axis(px, [pt[px.name] for pt in points], n)
    ys, oy = _axis(py, [pt[py.name] for pt in points], n)
    first = min(n, max(n // 4, 1))  # the first quarter: what a short budget would cover
    chart.border_title = f"preview: {n} trials · {px.name} × {py.name}{tail}"
    more = f" · v: {len(pairs)} pairs" if len(pairs) > 1 else ""
    chart.border_subtitle = legend([("•", "trial", BLUE), ("●", f"first {first}", VIOLET)]) + more
    chart.draw_points(
        [Points(xs[first:], ys[first:], "•", BLUE), Points(xs[:first], ys[:first], "●", VIOLET)],
        log_x=ox.get("log", False), x_range=ox.get("range"), categories=ox.get("categories"),
        log_y=oy.get("log", False), y_range=oy.get("range"), y_categories=oy.get("categories"))
    return pair
