"""Text formatting shared by the screens: values, durations, progress bars, trial states.

Colors are mid-tone truecolor so they read on dark and light themes alike (bright yellow or
pale green vanish on a light background; pure blue vanishes on a dark one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text

from engine.space import format_value

GREEN = "#2e9e4f"
BLUE = "#3a7bd5"
AMBER = "#c98200"
RED = "#d64545"
VIOLET = "#9b59b6"
GREY = "#8a8a8a"

STATE_STYLE: dict[str, str] = {
    "QUEUED": GREY,
    "RUNNING": f"bold {BLUE}",
    "PAUSED": AMBER,
    "COMPLETED": GREEN,
    "FAILED": f"bold {RED}",
    "DIVERGED": RED,
    "CANCELLED": GREY,
}
STATE_WORD: dict[str, str] = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "PAUSED": "paused",
    "COMPLETED": "done",
    "FAILED": "failed",
    "DIVERGED": "diverged",
    "CANCELLED": "cancelled",
}
SEVERITY_GLYPH: dict[str, str] = {"warn": "▲", "info": "●", "ok": "✓"}
SEVERITY_VAR: dict[str, str] = {"warn": "$warning", "info": "$accent", "ok": "$success"}
VERDICT_STYLE: dict[str, str] = {"adopt": GREEN, "reject": RED, "inconclusive": AMBER}
_EIGHTHS = " ▏▎▍▌▋▊▉█"
_SPARK = "▁▂▃▄▅▆▇█"


def value(v: Any) -> str:
    """A hyperparameter or metric value, short and stable (``—`` for missing/NaN)."""
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    return format_value(v)


def metric(v: float | None, digits: int = 4) -> str:
    """A metric value with a fixed number of significant digits."""
    if v is None:
        return "—"
    if not math.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def tick(v: float) -> str:
    """An axis tick: short and exact for round numbers (``0.005``, ``2e-5``, ``300``);
    scientific below 1e-3 and from 1e5, as :func:`value` writes hyperparameters."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.6g}"
    mantissa, exponent = f"{v:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def at_scale(v: float | None, scale: float, digits: int = 3) -> str:
    """``v`` rounded where the largest number beside it (``scale``) has ``digits``
    significant digits: a confidence bound of 1.86e-10 beside 0.0078 reads ``0``."""
    if v is None:
        return "—"
    if not math.isfinite(v):
        return "nan"
    if not scale or not math.isfinite(scale):
        return metric(v)
    place = math.floor(math.log10(abs(scale))) - digits + 1  # the last digit kept: 10**place
    rounded = round(v / 10.0**place) * 10.0**place
    if rounded == 0:
        return "0"
    return _at_place(rounded, place)


def with_spread(v: float | None, spread: float | None) -> str:
    """``0.0030 ±0.0018``: the spread with two significant digits and the value rounded to
    the same place (never ``0.002958 ±0.0018``, which claims digits the spread denies)."""
    if v is None or spread is None or not math.isfinite(spread) or spread < 0:
        return metric(v)
    if not math.isfinite(v):
        return "nan"
    if spread == 0:  # identical seeds: nothing to round to
        return f"{metric(v)} ±0"
    spread = float(f"{spread:.2g}")  # 9.96e-4 -> 0.0010, then the place of its last digit
    place = math.floor(math.log10(spread)) - 1
    place = max(place, math.floor(math.log10(abs(v))) - 5) if v else place  # ≤ 6 digits
    return f"{_at_place(v, place)} ±{_at_place(spread, place)}"


def _at_place(v: float, place: int) -> str:
    """``v`` written to the decimal place 10**place (scientific outside 1e-4 .. 1e5)."""
    if v != 0 and (abs(v) < 1e-4 or abs(v) >= 1e5):
        sig = max(math.floor(math.log10(abs(v))) - place, 0)
        return tick(float(f"{v:.{sig}e}")) if sig == 0 else f"{v:.{sig}e}"
    return f"{v:.{max(-place, 0)}f}"


def duration(seconds: float | None) -> str:
    """``42s``, ``6m``, ``1h05m``; ``—`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(fraction: float, width: int) -> str:
    """A left-aligned progress bar in eighth blocks, exactly ``width`` cells."""
    f = min(max(fraction, 0.0), 1.0)
    eighths = round(f * width * 8)
    full, part = divmod(eighths, 8)
    out = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return out.ljust(width)


def sparkline(values: Iterable[float], low: float = 0.0, high: float = 100.0) -> str:
    """Block characters for a short history (e.g. a GPU's utilisation samples)."""
    span = (high - low) or 1.0
    out = []
    for v in values:
        i = int((min(max(v, low), high) - low) / span * (len(_SPARK) - 1))
        out.append(_SPARK[i])
    return "".join(out)


def state_text(state: str, width: int = 9) -> Text:
    """A trial state as a colored word."""
    return Text(STATE_WORD.get(state, state.lower()).ljust(width), style=STATE_STYLE.get(state, ""))


def params_line(params: Mapping[str, Any], names: Iterable[str] | None = None) -> str:
    """``learning_rate=2.1e-03, momentum=0.93`` (only ``names`` when given)."""
    keys = list(names) if names is not None else list(params)
    return ", ".join(f"{k}={value(params[k])}" for k in keys if k in params)


def bytes_gb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e9:.0f}"


def one_line(exc: BaseException | str, limit: int = 200) -> str:
    """An exception (or text) as a single line for a notification."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def trials_text(report: Any) -> str:
    """``32 trials + 10 reruns``: a study's search trials, then its seed reruns apart."""
    search = report.n_trials - report.n_reruns
    return f"{search} trials" + (f" + {report.n_reruns} reruns" if report.n_reruns else "")
