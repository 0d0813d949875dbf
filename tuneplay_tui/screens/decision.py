"""5 Decision: seed reruns, the comparison and its test, the verdict, adoption, the log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import DataTable, Static

from engine.store.base import Decision, Trial, TrialState
from tuneplay_tui import format as fmt
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.dialogs import ConfirmScreen, FormScreen
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.plotting import BLUE, GREEN, Points, legend

VERDICT_VAR = {"adopt": "$success", "reject": "$error", "inconclusive": "$warning"}


def rerun_progress(trials: Sequence[Trial]) -> dict[str, tuple[int, int]]:
    """(finished, total) seed reruns per side: ``rerun`` (candidates) and ``baseline``."""
    out: dict[str, tuple[int, int]] = {}
    for kind in ("rerun", "baseline"):
        group = [t for t in trials if t.kind == kind]
        out[kind] = (sum(t.state.is_finished() for t in group), len(group))
    return out


def finished_values(trials: Sequence[Trial], kind: str) -> list[float]:
    """The best metric value of each completed seed rerun of one side (what ``d`` compares)."""
    return [t.best_value for t in trials
            if t.kind == kind and t.state == TrialState.COMPLETED and t.best_value is not None]


def since_verdict(trials: Sequence[Trial], decision: Decision | None) -> tuple[int, int]:
    """Seed reruns the recorded verdict did not see: (finished after it, not finished yet)."""
    if decision is None:
        return 0, 0
    reruns = [t for t in trials if t.kind in ("rerun", "baseline")]
    fresh = sum(1 for t in reruns if t.state.is_finished() and (t.finished_at or 0) > decision.created_at)
    return fresh, sum(1 for t in reruns if not t.state.is_finished())


def ago(then: float, now: float) -> str:
    return fmt.duration(max(now - then, 0)) + " ago"


class DecisionScreen(StageScreen):
    STAGE = "decision"
    TITLE_TEXT = "5 Decision — adopt only what beats trial variance"
    HELP = """
A study's best trial was *selected* as the best of many, so its value is optimistic (the
winner's curse). The playbook's rule: before adopting a change, **rerun** the candidate and
the baseline with new seeds, measure the seed-to-seed (trial) variance, and adopt only when
the gain is clearly larger than that variance — and worth the complexity it adds.

`r` enqueues the reruns (they run in the engine like any trial); `d` compares them with a
stated test (Welch's t-test with a bootstrap interval) and records the verdict in the
decision log; `a` adopts the candidate into the next baseline version, which every new
study then starts from. An inconclusive verdict usually means: more seeds.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rerun", "Rerun seeds"),
        Binding("d", "decide", "Decide"),
        Binding("a", "adopt", "Adopt"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.result: Any = None  # the last DecisionResult made here

    def compose_body(self) -> ComposeResult:
        yield Static(id="dec-candidate", classes="summary")
        with Horizontal(id="dec-body", classes="body"):
            with VerticalScroll(id="dec-verdict-box"):  # at 80x24 the test lines scroll
                yield Static(id="dec-verdict")
            yield Chart(id="dec-chart")
        log: DataTable[Any] = DataTable(id="decision-log", cursor_type="row")
        log.border_title = "decision log"
        yield log

    def on_mount(self) -> None:
        super().on_mount()
        log = self.query_one("#decision-log", DataTable)
        for key, label, width in (("id", "#", 3), ("when", "when", 10), ("study", "study", 14),
                                  ("verdict", "verdict", 12), ("base", "baseline", 8),
                                  ("why", "rationale", 70)):
            log.add_column(label, key=key, width=width)

    def update_view(self) -> None:
        study = self.state.study()
        trials = self.state.study_trials()
        decisions = self.state.study_decisions()
        decision = decisions[-1] if decisions else None
        self._candidate_line(study, decision)
        verdict = self.query_one("#dec-verdict", Static)
        self.query_one("#dec-verdict-box").border_title = "comparison over seed reruns"
        verdict.update(verdict_content(study, trials, decision, self.result))
        self._draw_chart(decision, trials)
        self._fill_log()

    def _candidate_line(self, study: Any, decision: Decision | None) -> None:
        line = self.query_one("#dec-candidate", Static)
        base = self.state.baseline()
        if study is None:
            line.update("No study yet: decisions compare a study's best against the baseline.")
            return
        names = [p["name"] for p in (*study.spec.get("scientific", ()), *study.spec.get("nuisance", ()))]
        cand = decision.candidate if decision else None
        what = fmt.params_line(cand, names) if cand else "the study's best configuration"
        # a recorded decision names the baseline version it was judged against
        version = decision.baseline_version if decision else (base.version if base else None)
        line.update(Content.assemble(("candidate: ", "$foreground-muted"), (what, "bold"),
                                     f'  (study "{study.name}")', ("   vs   ", "$foreground-muted"),
                                     (f"baseline v{version}" if version else "no baseline", "bold")))

    def _draw_chart(self, decision: Decision | None, trials: Sequence[Trial]) -> None:
        chart = self.query_one("#dec-chart", Chart)
        chart.border_title = "seed reruns"
        stats = decision.stats if decision else {}
        cand, base = stats.get("candidate_values") or [], stats.get("baseline_values") or []
        note = ""
        fresh, _ = since_verdict(trials, decision)
        if fresh or not (cand or base):  # what is not compared yet: every rerun finished so far
            mine = [t for t in trials if t.kind != "rerun" or decision is None or t.params == decision.candidate]
            cand, base = finished_values(mine, "rerun"), finished_values(mine, "baseline")
            note = f"{fresh} new since the verdict" if decision is not None else "not compared yet"
        if not cand and not base:
            chart.border_subtitle = ""
            chart.draw_message("no reruns finished yet")
            return
        def jitter(n: int, at: int) -> list[float]:
            return [at + ((i * 7) % 9 - 4) / 30.0 for i in range(n)]
        chart.draw_points([Points(jitter(len(base), 0), base, "●", BLUE),
                           Points(jitter(len(cand), 1), cand, "●", GREEN)],
                          categories=("baseline", "candidate") if chart.size.width >= 34
                          else ("base", "cand"))
        chart.border_subtitle = legend([("●", "one seed", BLUE)]) + (f" · {note}" if note else "")

    def _fill_log(self) -> None:
        log = self.query_one("#decision-log", DataTable)
        decisions = list(self.state.decisions())
        if [str(k.value) for k in log.rows] == [str(d.id) for d in reversed(decisions)]:
            return
        log.clear()
        now = self.tuneplay.clock()
        names = {s.study.id: s.study.name for s in self.state.search_studies()}
        for d in reversed(decisions):
            log.add_row(str(d.id), ago(d.created_at, now), names.get(d.study_id or -1, "—"),
                        Text(d.verdict, style=fmt.VERDICT_STYLE.get(d.verdict, "")),
                        f"v{d.baseline_version}", d.rationale, key=str(d.id))

    # ------------------------------------------------------------- actions
    def action_rerun(self) -> None:
        if self.require_study() is None:
            return
        fields = [("best_k", "best configurations", "1"), ("seeds", "seeds each", "5")]
        self.app.push_screen(FormScreen(
            "Seed reruns", fields, "Reruns the study's best configurations and the baseline with "
            "new seeds (the same seeds on both sides)."), self._rerun)

    def _rerun(self, answer: dict[str, str] | None) -> None:
        sid = self.state.study_id
        if not answer or sid is None:
            return
        try:
            best_k, seeds = int(answer["best_k"]), int(answer["seeds"])
            if best_k < 1 or seeds < 2:
                raise ValueError
        except ValueError:
            self.notify("reruns: at least 1 configuration and 2 seeds (whole numbers)",
                        severity="error")
            return
        self.engine_call("rerun", lambda: self.facade.rerun(sid, best_k, seeds),
                         lambda n: self.notify(f"queued {fmt.plural(n, 'rerun trial')}"))

    def action_decide(self) -> None:
        sid = self.require_study()
        if sid is not None:
            self.engine_call("decide", lambda: self.facade.decide(sid, adopt=False), self._decided)

    def _decided(self, result: Any, adopt: bool = False) -> None:
        self.result = result
        c = result.comparison
        self.notify(f"verdict: {c.verdict.upper()} — {c.reason}", title="decision recorded",
                    timeout=8)
        if result.new_baseline is not None:
            self.notify(f"adopted: baseline v{result.new_baseline.version} is the new baseline",
                        title="baseline adopted", timeout=8)
        elif adopt:
            self.notify(f"not adopted: the verdict is {c.verdict}, not adopt", title="adopt",
                        severity="warning", timeout=8)
        self.refresh_view()

    def action_adopt(self) -> None:
        sid = self.require_study()
        if sid is None:
            return
        base = self.state.baseline()
        nxt = f"baseline v{base.version + 1}" if base else "a new baseline"
        decisions = self.state.study_decisions()
        detail = (f"last verdict: {decisions[-1].verdict} — {decisions[-1].rationale}"
                  if decisions else "no verdict recorded yet: the reruns are compared first")
        self.app.push_screen(ConfirmScreen(f"Adopt the candidate as {nxt}?", detail),
                             lambda yes: self.engine_call(
                                 "adopt", lambda: self.facade.decide(sid, adopt=True),
                                 lambda r: self._decided(r, adopt=True)) if yes else None)


def verdict_content(study: Any, trials: Sequence[Trial], decision: Decision | None,
                    result: Any) -> Content:
    """The reruns' state, each side's mean and spread, the test, the verdict and why."""
    if study is None:
        return Content("")
    progress = rerun_progress(trials)
    lines: list[Content] = []
    (cd, ct), (bd, bt) = progress["rerun"], progress["baseline"]
    if ct or bt:
        lines.append(Content.assemble(("reruns  ", "$foreground-muted"),
                                      f"candidate {cd}/{ct} done · baseline {bd}/{bt} done"))
    if decision is None:
        if not ct:
            lines.append(Content("No seed reruns yet. The best trial was selected from many, so "
                                 "its value is optimistic: press r to rerun it and the baseline "
                                 "with new seeds."))
        elif cd < ct or bd < bt:
            lines.append(Content.styled("d decides once every rerun has finished.",
                                        "$foreground-muted"))
        else:
            lines.append(Content("All reruns finished: press d to compare and record a verdict."))
        return Content("\n").join(lines)
    fresh, pending = since_verdict(trials, decision)
    if fresh or pending:
        news = ", ".join(x for x in (f"{fresh} finished" if fresh else "",
                                     f"{pending} still to run" if pending else "") if x)
        lines.append(Content.styled(f"new reruns since this verdict ({news}): d decides again"
                                    + (" once they finish" if pending else ""), "$warning"))
    lines += comparison_lines(decision)
    if result is not None and result.new_baseline is not None:
        lines.append(Content.styled(f"adopted → baseline v{result.new_baseline.version}",
                                    "bold $success"))
    return Content("\n").join(lines)


def comparison_lines(d: Decision) -> list[Content]:
    c: Mapping[str, Any] = d.stats.get("comparison", {}) if d.stats else {}
    out: list[Content] = []
    for side in ("candidate", "baseline"):
        mean, std, n = c.get(f"mean_{side}"), c.get(f"std_{side}"), c.get(f"n_{side}", 0)
        out.append(Content.assemble((f"{side:<10}", "bold"),
                                    fmt.with_spread(mean, std).ljust(18), f"({n} seeds)"))
    out.append(Content.assemble(("verdict: ", "bold"),
                                (d.verdict.upper(), f"bold reverse {VERDICT_VAR.get(d.verdict, '')}"),
                                f" — {d.rationale}"))
    ignored = c.get("seed_ignored") or ()
    if d.verdict == "adopt":
        out.append(Content.styled("→ a adopts it into the next baseline", "$accent"))
    elif ignored:  # more seeds of a workload that ignores them change nothing
        out.append(Content.styled("→ pass the seed to the workload (above), then r reruns with "
                                  "new seeds; d decides again", "$accent"))
    elif d.verdict == "inconclusive":
        out.append(Content.styled("→ r adds seeds; d decides again", "$accent"))
    out.append(Content.styled(stated_test(d.test, c), "$foreground-muted"))
    diff, lo, hi, eff = (c.get(k) for k in ("difference", "ci_low", "ci_high", "effect_in_seed_std"))
    if diff is not None:  # one scale for the three: a bound of 1.86e-10 beside 0.0078 is 0
        scale = max(abs(x) for x in (diff, lo, hi) if x is not None)
        ci = (f" (95% CI {fmt.at_scale(lo, scale)} .. {fmt.at_scale(hi, scale)})"
              if lo is not None else "")
        times = f" = {abs(eff):.1f}× the pooled seed spread" if eff is not None else ""
        out.append(Content(f"difference {fmt.at_scale(diff, scale)}{ci}{times}"))
    if d.complexity_note:
        out.append(Content.styled(f"complexity: {d.complexity_note}", "$foreground-muted"))
    return out



def stated_test(test: str, c: Mapping[str, Any]) -> str:
    """The stated test and its statistics, or why none was run."""
    ignored = c.get("seed_ignored") or ()
    if ignored:
        return (f"no test run: the {' and '.join(ignored)} seed reruns are identical "
                "(no trial variance to test against)")
    t, p = c.get("t_statistic"), c.get("p_value")
    stats = (f"t = {t:.2f}, " if t is not None else "") + (f"p = {p:.2g}" if p is not None else "")
    return f"{test}: {stats}"
