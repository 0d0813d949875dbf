"""Drawing the analysis report's plots onto charts, and its next-round plan as text (kept
apart from the screen's keys)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from textual.content import Content

from tuneplay_tui import format as fmt
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.plotting import (
    AMBER,
    BLUE,
    GREEN,
    MUTED,
    PALETTE,
    RED,
    Line,
    Points,
    legend,
)

AXIS_LEGEND = legend([("•", "trial", BLUE), ("●", "best", GREEN), ("◆", "finding", AMBER),
                      ("x", "diverged/failed", RED)])
EDGE = 0.10  # the boundary check's edge band


def draw_axis(chart: Chart, axis: Any, highlight: Iterable[int], band: bool) -> None:
    """One axis plot: every result at its best value; best, highlighted, infeasible marked."""
    marked = set(highlight)
    top = set(axis.top_trial_ids)
    cats = list(axis.categories) if axis.categories is not None else None

    def xpos(v: Any, tid: int) -> Any:
        if cats is None:
            return v
        jitter = ((tid * 37) % 11 - 5) / 40.0  # spread points of one category, deterministically
        return (cats.index(v) if v in cats else 0) + jitter

    groups: dict[str, tuple[list[Any], list[float]]] = {"plain": ([], []), "top": ([], []),
                                                        "mark": ([], [])}
    for x, y, tid in zip(axis.x, axis.y, axis.trial_ids):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            continue
        g = "mark" if tid in marked else "top" if tid in top else "plain"
        groups[g][0].append(xpos(x, tid))
        groups[g][1].append(y)
    bad_x = [xpos(x, tid) for x, tid in zip(axis.infeasible_x, axis.infeasible_trial_ids)
             if x is not None]
    cap = axis.infeasible_y
    ys = [y for g in groups.values() for y in g[1]]
    if not ys and not bad_x:
        chart.draw_message(f"{axis.name}: no results yet")
        return
    pts = [Points(*groups["plain"], "•", BLUE), Points(*groups["top"], "●", GREEN),
           Points(*groups["mark"], "◆", AMBER)]
    if bad_x and cap is not None:
        pts.append(Points(bad_x, [cap] * len(bad_x), "x", RED))
    x_range = (axis.low, axis.high) if axis.low is not None and cats is None else None
    vlines = band_lines(axis) if band and x_range else ()
    chart.draw_points(pts, log_x=axis.log, x_range=x_range, categories=cats, vlines=vlines)
    chart.border_subtitle = AXIS_LEGEND


def band_lines(axis: Any) -> tuple[float, float]:
    """Where the outer 10% bands of the range start, on its scale."""
    lo, hi = float(axis.low), float(axis.high)
    if axis.log:
        return lo * (hi / lo) ** EDGE, lo * (hi / lo) ** (1 - EDGE)
    return lo + EDGE * (hi - lo), hi - EDGE * (hi - lo)


def draw_curves(chart: Chart, diagnostics: Any, focus: int | None) -> None:
    """Validation curves of the best trials (the finding's trial in amber, drawn last)."""
    if diagnostics is None or not diagnostics.trials:
        chart.draw_message("curves: no finished trial with curves yet")
        return
    lines = []
    has_focus = any(tc.trial_id == focus for tc in diagnostics.trials)
    for i, tc in enumerate(diagnostics.trials):
        s = next((s for s in tc.series if s.metric == diagnostics.metric), None)
        if s is None:
            continue
        color = (AMBER if tc.trial_id == focus else MUTED) if has_focus else PALETTE[i % 5]
        lines.append(Line(f"#{tc.trial_id}", s.steps, s.values, color))
    lines.sort(key=lambda ln: ln.label == f"#{focus}")
    chart.border_title = f"curves of the best {len(lines)} · {diagnostics.metric} · v: next view"
    chart.border_subtitle = legend([("━", ln.label, ln.color) for ln in lines])
    chart.draw_lines(lines)


def draw_budget(chart: Chart, bvt: Any) -> None:
    """Best value vs number of trials (bootstrap median and 10-90% band)."""
    if bvt is None:
        chart.draw_message("best vs trials: fewer than 2 results")
        return
    lines = [Line("q10", bvt.n, bvt.q10, MUTED), Line("q90", bvt.n, bvt.q90, MUTED),
             Line("median", bvt.n, bvt.median, BLUE)]
    chart.border_title = f"best {bvt.metric} vs number of trials (bootstrap) · v: next view"
    chart.border_subtitle = legend([("━", "median", BLUE), ("━", "10-90%", MUTED)])
    chart.draw_lines(lines, clip=False)


PLAN_STYLE = {"keep": "$foreground-muted", "enough": "$foreground-muted",
              "insensitive": "$accent"}  # every other action changes the study: bold warning


def plan_content(plan: Any, compact: bool = False) -> Content:
    """The next-round plan, one line per topic: ``budget          more 16 → 32``; ``compact``
    (a short terminal) lists only the topics that change (:func:`plan_kept` counts the rest)."""
    if plan is None:
        return Content.styled("no plan yet: it needs at least 3 finished trials",
                              "$foreground-muted")
    items = list(plan.items())
    shown = [i for i in items if str(i.action) not in ("keep", "enough")] if compact else items
    lines = [Content.assemble(f"{i.topic[:15]:<16}", (str(i.action), PLAN_STYLE.get(
        str(i.action), "bold $warning")), f" {plan_change(i)}" if plan_change(i) else "")
        for i in shown]
    if not lines:
        lines = [Content.styled("keep everything as it is", "$foreground-muted")]
    return Content("\n").join(lines)


def plan_kept(plan: Any) -> int:
    """How many topics the plan keeps as they are."""
    return sum(1 for i in plan.items() if str(i.action) in ("keep", "enough"))


def plan_change(item: Any) -> str:
    """What a plan item changes, short enough for the panel (a range shows its new bounds)."""
    if getattr(item, "scale", None) == "categorical":
        return ""
    if hasattr(item, "new_low"):
        return f"→ {fmt.value(item.new_low)}..{fmt.value(item.new_high)}" if item.changed else ""
    return f"{item.current} → {item.proposed}" if item.proposed != item.current else ""
