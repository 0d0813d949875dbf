"""Small text panels: device utilisation, isolation rows, best-checkpoint histogram.

These read better as text than as plots at terminal sizes (a bar per row, numbers beside).
Each function returns Content, so styles come from the theme (dark and light alike).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.content import Content

from tuneplay_tui import format as fmt

BAR_WIDTH = 18


def devices_line(devices: Sequence[Any], history: Mapping[str, Sequence[float]]) -> Content:
    """``gpu0 ▅▆▇▇ 91%  31/80 GB   gpu1 ...`` or why there is nothing to show."""
    if not devices:
        return Content.styled("devices: no utilisation reported (CPU slots or no nvidia-smi)",
                              "$foreground-muted")
    parts: list[Content | str | tuple[str, str]] = []
    for d in devices:
        util = "—" if d.utilization is None else f"{d.utilization:3.0f}%"
        spark = fmt.sparkline(history.get(d.name, ())).ljust(8)
        mem = (f"{fmt.bytes_gb(d.memory_used)}/{fmt.bytes_gb(d.memory_total)} GB"
               if d.memory_total else "")
        parts += [(d.name, "bold"), " ", (spark, "$accent"), f" {util}  {mem}   "]
    return Content.assemble(*parts)


def isolation_content(plot: Any, width: int = 60) -> Content:
    """Best-over-nuisance per scientific value: ``off  0.079 ±0.004 ▇▇▇▇▇▇``."""
    rows = [r for r in plot.rows if r.best_value is not None]
    if not rows:
        return Content.styled(f"isolation of {plot.name}: no completed trials yet",
                              "$foreground-muted")
    values = [r.best_value for r in rows]
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0
    label_w = max(len(fmt.value(r.value)) for r in rows)
    bar_w = max(min(width - label_w - 26, BAR_WIDTH), 4)
    lines: list[Content] = [Content.styled(
        f"isolation: {plot.name} (best {plot.metric} over the nuisance hyperparameters)", "bold")]
    for i, r in enumerate(plot.rows):
        if r.best_value is None:
            lines.append(Content(f"  {fmt.value(r.value):>{label_w}}  —  no result"))
            continue
        good = (r.best_value - lo) / span if plot.mode == "max" else (hi - r.best_value) / span
        bar = "▇" * max(1, round(1 + good * (bar_w - 1)))
        best = i == plot.best_row
        lines.append(Content.assemble(
            f"  {fmt.value(r.value):>{label_w}}  ",
            (fmt.with_spread(r.best_value, r.rerun_std).ljust(16), "bold" if best else ""),
            (bar, "$success" if best else "$accent"),
            (f"  #{r.best_trial_id}" if r.best_trial_id is not None else "", "$foreground-muted"),
        ))
    return Content("\n").join(lines)


def checkpoints_content(bc: Any) -> Content:
    """Where best checkpoints land, as a 10-bin text histogram over training."""
    if bc is None:
        return Content.styled("best checkpoints: fewer than 3 finished trials", "$foreground-muted")
    peak = max(bc.counts) or 1
    height = 5
    lines: list[Content] = [Content.styled(
        f"best checkpoints: {bc.n_trials} trials, median at {bc.median_fraction:.0%} of training",
        "bold")]
    for level in range(height, 0, -1):
        row = []
        for c in bc.counts:
            filled = c / peak * height
            row.append("██ " if filled >= level else ("▄▄ " if filled >= level - 0.5 else "   "))
        lines.append(Content.styled("  " + "".join(row), "$accent"))
    lines.append(Content.styled("  " + "".join(f"{int(e * 100):<3d}" for e in bc.bin_edges[:-1])
                                + "% of max_train_steps", "$foreground-muted"))
    if bc.suggested_max_train_steps:
        lines.append(Content.styled(
            f"  → try max_train_steps ≈ {bc.suggested_max_train_steps}", "bold $warning"))
    return Content("\n").join(lines)


def infeasible_content(inf: Any) -> Content:
    """``2 of 42 judged trials infeasible (5%): 1 diverged, 1 failed``."""
    if inf is None:
        return Content.styled("infeasible: no finished trials yet", "$foreground-muted")
    style = "$warning" if inf.fraction > 0.2 else "$foreground"
    text = (f"{inf.n_infeasible} infeasible ({inf.fraction:.0%})" if inf.n_infeasible
            else "none infeasible")
    return Content.styled(text, style)
