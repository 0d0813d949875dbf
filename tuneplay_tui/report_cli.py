"""``tuneplay report STUDY``: the analysis stage in the terminal (plotext charts and plain text),
as JSON (``--format json``), or as a shareable Markdown file (``--markdown FILE``).

All three draw from one :class:`engine.analysis.StudyReport`; the text and the JSON list the
same findings in the same order.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEVERITY_MARK = {"warn": "▲", "info": "●", "ok": "✓"}


@dataclass
class Section:
    title: str
    text: str = ""
    chart: str = ""


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="the playbook's analysis of a study: plots, findings, advice")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--markdown", metavar="FILE", help="also write a shareable Markdown report")
    p.add_argument("--width", type=int, default=None, help="chart width in columns (default: the terminal's)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from engine.cli import open_existing_store, study_named, workspace_dir
    from engine.reporting import load_report

    store = open_existing_store(args)
    study = study_named(store, args.study)
    loaded = load_report(store, study, workspace=workspace_dir(args))
    if args.format == "json":
        print(json.dumps(report_json(loaded), indent=1, allow_nan=False))
    else:
        width = args.width or min(110, _terminal_width())
        color = sys.stdout.isatty()
        print(render_text(build_sections(loaded, width, color)))
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(loaded, build_sections(loaded, 100, False)))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 40)).columns


def report_json(loaded: Any) -> dict[str, Any]:
    from engine.analysis import report_to_dict
    from engine.analysis.findings import jsonable

    out = report_to_dict(loaded.report)
    out["batch_scaling"] = jsonable(loaded.scaling) if loaded.scaling is not None else None
    if loaded.scaling is not None and loaded.scaling.finding is not None:
        out["findings"].append(loaded.scaling.finding.to_dict())
    out["n_failed"] = getattr(loaded, "n_failed", 0)
    out["failed_trials"] = [jsonable(f) for f in getattr(loaded, "failures", ())]
    return out


def all_findings(loaded: Any) -> list[Any]:
    found = list(loaded.report.findings)
    if loaded.scaling is not None and loaded.scaling.finding is not None:
        found.append(loaded.scaling.finding)
    return found


# ----------------------------------------------------------------------------- sections

def finding_line(x: Any) -> str:
    """One finding as the text report shows it: mark, stable kind, the sentence."""
    text = x.message if x.message.startswith(x.subject) else f"{x.subject}: {x.message}"
    return f" {SEVERITY_MARK.get(x.severity, '•')} [{x.kind}] {text}"


def build_sections(loaded: Any, width: int, color: bool) -> list[Section]:
    from engine.space import format_value as f
    from tuneplay_tui.format import trials_text

    r = loaded.report
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r.state_counts.items()))
    best = (f"best {r.metric} {f(r.best.value)} (#{r.best.trial_id}, step {f(r.best.step)})"
            if r.best else f"no completed trial with a {r.metric} yet")
    sections = [Section(f"Study {r.study}", f"{trials_text(r)} ({counts}) · {best}\nprotocol: {r.protocol}")]
    if r.next_round is not None:
        sections.append(plan_section(r.next_round))
    lines = [finding_line(x) for x in all_findings(loaded)]
    sections.append(Section(f"Findings ({len(lines)})", "\n".join(lines) or " none"))
    sections += [_axis_section(p, width, color) for p in r.axis_plots]
    if r.curves is not None:
        sections.append(_curves_section(r.curves, width, color))
    sections += [_isolation_section(p) for p in r.isolation]
    if r.best_checkpoints is not None:
        sections.append(_checkpoint_section(r.best_checkpoints, width, color))
    if r.infeasible is not None:
        inf = r.infeasible
        sections.append(Section("Infeasible trials", f"{inf.n_infeasible} of {inf.n_judged} finished trials "
                                f"({inf.fraction:.0%}): {inf.n_diverged} diverged, {inf.n_failed} failed"))
    if getattr(loaded, "failures", ()):  # a LoadedStudy has them; a bare report does not
        sections.append(_failures_section(loaded))
    if r.best_vs_trials is not None:
        sections.append(_budget_section(r.best_vs_trials))
    if loaded.scaling is not None:
        sections.append(_scaling_section(loaded.scaling))
    return sections


def plan_section(plan: Any) -> Section:
    """The next-round plan: one line per topic, then the findings it overruled and why."""
    lines = []
    for item in plan.items():
        lines.append(f" ▶ {item.topic}: {item.action} {item.change} — {item.reason}")
        lines += [f"     overruled: {b.describe()}" for b in item.overruled]
    lines.append(f" `tuneplay next {plan.study}` writes it as study {plan.name!r} ({plan.path})")
    return Section("Next round (one plan from all the findings below)", "\n".join(lines))


def _plt(width: int, height: int, color: bool) -> Any:
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    if not color:
        plt.theme("clear")
    return plt


def _build(plt: Any, color: bool) -> str:
    import re

    chart = plt.build()
    return chart if color else re.sub(r"\x1b\[[0-9;]*m", "", chart)


def _axis_section(p: Any, width: int, color: bool) -> Section:
    from engine.space import format_value as f
    from tuneplay_tui.widgets.plotting import _padded, log_ticks, nice_ticks

    plt = _plt(width, 15, color)
    cats = list(p.categories) if p.categories is not None else None
    pos = (lambda v: cats.index(v)) if cats else (lambda v: v)
    top = set(p.top_trial_ids)
    rest = [(pos(x), y) for x, y, t in zip(p.x, p.y, p.trial_ids) if t not in top]
    best = [(pos(x), y) for x, y, t in zip(p.x, p.y, p.trial_ids) if t in top]
    bad = [pos(x) for x in p.infeasible_x] if p.infeasible_y is not None else []
    marks = [("•", "trials", rest), ("●", f"best {len(best)}", best)]
    for marker, _, pts in marks:
        if pts:
            plt.scatter([a for a, _ in pts], [b for _, b in pts], marker=marker)
    if bad:
        plt.scatter(bad, [p.infeasible_y] * len(bad), marker="x")
        marks.append(("x", "diverged/failed", [(0, 0)]))
    if cats:
        plt.xticks(list(range(len(cats))), [f(c) for c in cats])
    elif p.low is not None and p.high is not None:  # the whole range, ticks at round values
        if p.log:
            plt.xscale("log")
        plt.xticks(*(log_ticks if p.log else nice_ticks)(float(p.low), float(p.high)))
        plt.xlim(*_padded((float(p.low), float(p.high)), p.log, 0.02))
    ys = [y for _, y in rest + best]
    if ys and max(ys) > min(ys):
        plt.yticks(*nice_ticks(min(ys), max(ys), 4))
    plt.xlabel(f"{p.name} ({p.scale})")
    plt.ylabel(p.metric)
    rng = f"range {f(p.low)} .. {f(p.high)}" if p.low is not None else "values " + ", ".join(f(c) for c in cats or [])
    chart = _build(plt, color) if (rest or best) else ""
    key = "   ".join(f"{m} {label}" for m, label, pts in marks if pts)
    return Section(f"Axis plot: {p.name} ({p.role}, {rng})", chart=chart + f"\n  {key}" if chart else "")


CURVE_MARKERS = ("●", "+", "x", "o", "*", "#", "@", "%")  # one per curve: told apart in plain text
CURVE_COLORS = ("blue", "green", "orange", "magenta", "cyan", "red", "yellow", "white")


def _curves_section(c: Any, width: int, color: bool) -> Section:
    from tuneplay_tui.widgets.plotting import clip_range, nice_ticks

    plt = _plt(width, 15, color)
    keys: list[str] = []
    xs: list[float] = []
    ys: list[float] = []
    for tc in c.trials:
        s = next((s for s in tc.series if s.metric == c.metric and s.steps), None)
        if s is None:
            continue
        marker = CURVE_MARKERS[len(keys) % len(CURVE_MARKERS)]
        values = [v if math.isfinite(v) else None for v in s.values]
        plt.plot(list(s.steps), values, marker=marker,
                 color=CURVE_COLORS[len(keys) % len(CURVE_COLORS)] if color else None)
        keys.append(f"{marker} #{tc.trial_id}" + (" (best)" if not keys else ""))
        xs += list(s.steps)
        ys += [v for v in values if v is not None]
    if xs:
        plt.xticks(*nice_ticks(min(xs), max(xs)))
    window = clip_range(ys)  # where the curves settle: the first steps' descent cut off
    if window is not None:
        lo, hi = window
        plt.ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        plt.yticks(*nice_ticks(lo, hi, 4))
    plt.xlabel("step")
    plt.ylabel(c.metric)
    flagged = sorted({x.kind for x in c.findings if x.severity == "warn"})
    text = f"diagnostics: {', '.join(flagged)} (see the findings above)" if flagged else "diagnostics: clean"
    chart = _build(plt, color) + "\n  " + "   ".join(keys) if keys else ""  # the legend: off the plot
    return Section(f"Curves of the best {len(c.trials)} trials ({c.metric})", text, chart)


def _isolation_section(p: Any) -> Section:
    from engine.space import format_value as f
    from tuneplay_tui.format import with_spread

    vals = [r.best_value for r in p.rows if r.best_value is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lines = []
    for i, r in enumerate(p.rows):
        label = f(r.value) if not p.bucketed else f"{f(r.bucket_low)}..{f(r.bucket_high)}"
        share = (r.best_value - lo) / (hi - lo) if r.best_value is not None and hi > lo else 0.0
        bar = "▇" * (4 + int(20 * share)) if r.best_value is not None else ""
        spread = (f" reruns {with_spread(r.rerun_mean, r.rerun_std)} (n={r.n_reruns})"
                  if r.n_reruns else "")
        mark = " ◀ best" if i == p.best_row else " ◀ tie" if i in getattr(p, "tied", ()) else ""
        lines.append(f"  {label:>14}  {f(r.best_value):>9}  {bar}{mark}  (#{r.best_trial_id}, "
                     f"{r.n_feasible}/{r.n_trials} feasible){spread}")
    return Section(f"Isolation: best {p.metric} per {p.name} value, over the nuisance hyperparameters",
                   "\n".join(lines))


def _checkpoint_section(b: Any, width: int, color: bool) -> Section:
    from tuneplay_tui.widgets.plotting import nice_ticks

    plt = _plt(min(width, 80), 10, color)
    labels = [f"{int(100 * b.bin_edges[i])}%" for i in range(len(b.counts))]
    plt.bar(labels, list(b.counts))
    ticks, _ = nice_ticks(0, max(max(b.counts), 1), 4)
    whole = [t for t in ticks if float(t).is_integer()]  # counts of trials: whole numbers
    plt.yticks(whole, [str(int(t)) for t in whole])
    plt.xlabel("best step / max_train_steps")
    text = (f"{b.share_early:.0%} of best checkpoints in the first 10% of training, {b.share_late:.0%} "
            f"in the last 25%; median at {b.median_fraction:.0%}")
    return Section("Where the best checkpoints land", text, _build(plt, color))


def _failures_section(loaded: Any) -> Section:
    """Each failed trial's error and the last lines its program printed, latest first."""
    from engine.failures import failure_lines, more_failed_line

    lines = [line for f in loaded.failures for line in failure_lines(f, " ")]
    more = more_failed_line(len(loaded.failures), loaded.n_failed, loaded.report.study, " ")
    return Section(f"Failed trials ({loaded.n_failed}, latest first)", "\n".join(lines + ([more] if more else [])))


def _budget_section(b: Any) -> Section:
    from engine.space import format_value as f

    n_obs = b.n_observed
    picks = sorted({max(1, n_obs // 2), n_obs, 2 * n_obs} & set(b.n))
    rows = [f"  {n:>5} trials: median best {f(b.median[b.n.index(n)])} "
            f"(10-90%: {f(b.q10[b.n.index(n)])} .. {f(b.q90[b.n.index(n)])})" for n in picks]
    return Section("Best vs number of trials (bootstrap)", "\n".join(rows))


def _scaling_section(s: Any) -> Section:
    from engine.space import format_value as f

    lines = [f"  {'batch':>6} {'steps':>8} {'perfect':>8} {'speed-up/doubling':>18}"]
    for r in s.rows:
        lines.append(f"  {r.batch_size:>6} {f(r.steps):>8} {f(r.perfect_steps):>8} {f(r.speedup_per_doubling):>18}")
    if s.finding is not None:
        lines.append(f" {SEVERITY_MARK.get(s.finding.severity, '•')} {s.finding.message}")
    return Section("Batch-size scaling: steps to reach the target", "\n".join(lines))


# ----------------------------------------------------------------------------- renderers

def render_text(sections: list[Section]) -> str:
    out = []
    for s in sections:
        out.append(f"── {s.title} " + "─" * max(0, 70 - len(s.title)))
        if s.text:
            out.append(s.text)
        if s.chart:
            out.append(s.chart)
        out.append("")
    return "\n".join(out)


def render_markdown(loaded: Any, sections: list[Section]) -> str:
    out = [f"# tuneplay report: {loaded.report.study}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += ["```", s.text, "```", ""]
        if s.chart:
            out += ["```", s.chart, "```", ""]
    return "\n".join(out)
