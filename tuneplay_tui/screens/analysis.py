"""4 Analysis: findings first; the plots beside them follow the selected finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, OptionList, Static

from tuneplay_tui import format as fmt
from tuneplay_tui.messages import AnalysisReady
from tuneplay_tui.screens.analysis_draw import (
    draw_axis,
    draw_budget,
    draw_curves,
    plan_content,
    plan_kept,
)
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.state import finished_count
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.findings import FindingsList
from tuneplay_tui.widgets.panels import checkpoints_content, infeasible_content, isolation_content

VIEWS = ("curves", "isolation", "checkpoints", "budget")
SHORT_VIEWS = ("axis", *VIEWS)  # a short terminal shows one of these at a time, axis plot too
VIEW_OF_KIND = {
    "overfitting": "curves", "high_variance": "curves", "still_improving": "curves",
    "saturated_early": "curves", "train_loss_rising": "curves", "clean_curve": "curves",
    "isolation": "isolation", "best_checkpoint_early": "checkpoints",
    "best_checkpoint_late": "checkpoints", "best_checkpoint_ok": "checkpoints",
    "budget_sensitivity": "budget",
}


class AnalysisScreen(StageScreen):
    STAGE = "analysis"
    TITLE_TEXT = "4 Analysis — what the study says"
    HELP = """
Before drawing conclusions, check the study can support them (playbook: "Extracting insight
from experimental results"):

* **Axis plots** — each trial at its best validation value against one hyperparameter,
  infeasible trials marked. If the best trials crowd an **edge of the range**, the optimum
  may lie outside it: expand the range and rerun (the boundary finding says to what).
* **Sampling density** — too few trials in the good region and its shape is a guess.
* **Curves of the best trials** — problematic overfitting, high late variance, still
  improving at the end (train longer), saturated early (train shorter).
* **Isolation plot** — for each scientific value, the best result over the nuisance
  hyperparameters: the fair comparison the study was designed for.
* **Best checkpoints** — piling up at the end says max_train_steps is too short.
* **Infeasible fraction** — diverged/failed trials and where they concentrate.

The **next round** panel resolves all findings into one plan: train longer, shorter or the
same; more trials or enough; and per range expand, narrow, keep, or insensitive (no visible
effect). Study-level evidence outranks a single trial, and no topic gets two directions.
`n` opens the next round's study file in Design, to review and launch.

Findings come warn first. `enter` lists the trials behind a finding; `enter` on a trial
opens it on the running screen with its curves.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "trials", "Trials behind", show=False,
                priority=True),  # before the lists' own enter, which says nothing when empty
        Binding("left_square_bracket", "axis(-1)", "Prev hp"),
        Binding("right_square_bracket", "axis(1)", "Next hp"),
        Binding("v", "view", "View", tooltip="The next plot: curves, isolation, best "
                "checkpoints, budget (and, on a short terminal, the axis plot)"),
        Binding("f", "findings", "Findings", tooltip="Hide or show the findings: the plots "
                "take the whole width"),
        Binding("n", "next_round", "Next round", tooltip="Open the next round's study in Design"),
        Binding("R", "reanalyze", "Re-analyse", show=False),
        Binding("escape", "back", "Findings", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: Any = None
        self.report_key: tuple[int, int] | None = None
        self._pending: tuple[int, int] | None = None
        self.axis_index = 0
        self.view = "curves"

    def compose_body(self) -> ComposeResult:
        yield Static(id="an-summary", classes="summary")
        with Horizontal(id="an-body", classes="body"):
            yield from self._compose_columns()

    def _compose_columns(self) -> ComposeResult:
        with Vertical(id="an-left"):
            plan = Static(id="an-plan", classes="panel")
            plan.border_title = "next round · n: open it in Design"
            yield plan
            findings = FindingsList(id="findings")
            findings.border_title = "findings"
            yield findings
            table: DataTable[Any] = DataTable(id="finding-trials", cursor_type="row")
            table.border_title = "trials behind the finding"
            yield table
        with Vertical(id="an-right"):
            yield Chart(id="axis-chart")
            yield Chart(id="detail-chart")
            yield Static(id="detail-text")

    # ------------------------------------------------------------- data
    def update_view(self) -> None:
        s = self.state.study_summary()
        if s is None:
            self.query_one("#an-summary", Static).update(
                "No study to analyse yet: design one on screen 2, run it, come back here.")
            return
        key = (s.study.id, finished_count(s.counts))
        if key != self.report_key and key != self._pending:
            self._pending = key
            sid = s.study.id
            self.run_worker(lambda: self._analyze(sid, key[1]), thread=True, group="analysis",
                            name="analysis", exit_on_error=False)
        if self.report_key is None or self.report_key[0] != s.study.id:
            self.query_one("#an-summary", Static).update(f'analysing "{s.study.name}"…')

    def _analyze(self, study_id: int, n_finished: int) -> None:
        try:
            report = self.facade.analyze(study_id)
        except Exception as exc:  # noqa: BLE001 (an error boundary)
            self.post_message(AnalysisReady(study_id, error=fmt.one_line(exc), n_finished=n_finished))
            return
        self.post_message(AnalysisReady(study_id, report, n_finished=n_finished))

    def on_analysis_ready(self, message: AnalysisReady) -> None:
        self._pending = None
        if message.study_id != self.state.study_id:
            self.refresh_view()
            return
        self.report_key = (message.study_id, message.n_finished)
        if message.error is not None:
            self.notify(message.error, title="analysis failed", severity="error")
            return
        self.report = message.report
        self._draw_all()

    # ------------------------------------------------------------- drawing
    def _draw_all(self) -> None:
        r = self.report
        best = (f" · best {r.metric} {fmt.metric(r.best.value)} (#{r.best.trial_id})"
                if r.best else "")
        trials = fmt.trials_text(r)
        self.query_one("#an-summary", Static).update(Content.assemble(
            f"{trials} · {r.n_feasible} results", best, " · ",
            infeasible_content(r.infeasible)))
        findings = self.query_one(FindingsList)
        findings.border_title = f"findings ({len(r.findings)}) · enter: trials behind"
        findings.set_findings(r.findings)
        self._draw_plan()
        self._follow_finding()

    def _draw_plan(self) -> None:
        plan = self.query_one("#an-plan", Static)
        next_round = self.report.next_round if self.report is not None else None
        compact = self.has_class("-short")
        plan.update(plan_content(next_round, compact))
        kept = f"{plan_kept(next_round)} kept · " if compact and next_round is not None else ""
        plan.border_subtitle = f"{kept}as study {next_round.name}" if next_round is not None else ""

    def _apply_size(self, width: int, height: int) -> None:
        was_short = self.has_class("-short")
        super()._apply_size(width, height)
        if self.report is not None and self.is_mounted:
            self._draw_plan()  # a short terminal lists only the changes
            if was_short != self.has_class("-short"):
                self._draw_axis()
                self._draw_detail()

    @property
    def one_chart(self) -> bool:
        """A short terminal shows one plot at a time (v cycles), the axis plot among them."""
        return self.has_class("-short")

    def _follow_finding(self) -> None:
        """Point the axis plot and the detail view at what the selected finding is about."""
        f = self.query_one(FindingsList).current()
        names = [a.name for a in self.report.axis_plots] if self.report else []
        if f is not None:
            subject = f.subject
            if f.kind == "infeasible_fraction":
                subject = next((c.name for c in getattr(self.report.infeasible, "concentrations", ())
                                if c.notable), subject)
            if subject in names:
                self.axis_index = names.index(subject)
            axis = "axis" if subject in names and self.one_chart else self.view
            self.view = VIEW_OF_KIND.get(f.kind, axis)
        self._draw_axis()
        self._draw_detail()
        self._list_trials()

    def _draw_axis(self) -> None:
        chart = self.query_one("#axis-chart", Chart)
        chart.display = not self.one_chart or self.view == "axis"
        if not chart.display:
            return
        if not self.report or not self.report.axis_plots:
            chart.border_title = "axis plot"
            chart.draw_message("no searched hyperparameters")
            return
        self.axis_index %= len(self.report.axis_plots)
        axis = self.report.axis_plots[self.axis_index]
        f = self.query_one(FindingsList).current()
        marked = f.trial_ids if f is not None and f.kind != "best_checkpoint_ok" else ()
        chart.border_title = (f"axis plot: {axis.name} ({axis.scale}, {axis.role}) · "
                              f"{self.axis_index + 1}/{len(self.report.axis_plots)} [ ]")
        band = f is not None and f.kind == "boundary" and f.subject == axis.name
        draw_axis(chart, axis, marked, band)

    def _draw_detail(self) -> None:
        chart = self.query_one("#detail-chart", Chart)
        text = self.query_one("#detail-text", Static)
        r = self.report
        view = self.view if self.view != "axis" or self.one_chart else "curves"
        as_text = view in ("isolation", "checkpoints")
        chart.display, text.display = view in ("curves", "budget"), as_text
        f = self.query_one(FindingsList).current()
        if view == "axis":
            return  # the axis plot holds the one place
        if view == "curves":
            focus = f.trial_ids[0] if f is not None and f.subject.startswith("trial") else None
            draw_curves(chart, r.curves, focus)
        elif view == "budget":
            draw_budget(chart, r.best_vs_trials)
        elif view == "isolation":
            text.border_title = "isolation · v: next view"
            width = text.size.width or self.query_one("#an-right").size.width - 4 or 60
            parts = [isolation_content(p, width) for p in r.isolation]
            text.update(Content("\n").join(parts) if parts else Content.styled(
                "isolation: the study has no scientific hyperparameter", "$foreground-muted"))
        else:
            text.border_title = "where the best checkpoints land · v: next view"
            text.update(checkpoints_content(r.best_checkpoints))

    def _list_trials(self) -> None:
        table = self.query_one("#finding-trials", DataTable)
        f = self.query_one(FindingsList).current()
        table.clear(columns=True)
        if f is None or not self.report:
            return
        names = [a.name for a in self.report.axis_plots]
        table.add_column("trial", key="trial", width=6)
        table.add_column("state", key="state", width=9)
        table.add_column("best", key="best", width=8)
        table.add_column("best@", key="at", width=6)
        for n in names:
            table.add_column(n[:12], key=n, width=max(8, min(len(n), 12)))
        by_id = {t.id: t for t in self.state.study_trials()}
        for tid in f.trial_ids[:200]:
            t = by_id.get(tid)
            if t is None:
                table.add_row(Text(str(tid)), "", "", "", *([""] * len(names)), key=str(tid))
                continue
            table.add_row(Text(f"{t.id}", style="bold"), fmt.state_text(t.state.value),
                          fmt.metric(t.best_value), "" if t.best_step is None else str(t.best_step),
                          *[fmt.value(t.params.get(n)) for n in names], key=str(tid))
        table.border_title = (f"trials behind: {f.kind.replace('_', ' ')} "
                              f"({len(f.trial_ids)}) · enter: open in running · esc: back")

    # ------------------------------------------------------------- actions
    @on(OptionList.OptionHighlighted, "#findings")
    def _finding_moved(self) -> None:
        if self.report is not None:
            self._follow_finding()

    @on(OptionList.OptionSelected, "#findings")
    def _finding_chosen(self) -> None:
        self.action_trials()

    def _require_report(self) -> bool:
        """True when there is an analysis to act on; else say why there is none."""
        if self.report is not None:
            return True
        if self.state.study_id is None:
            self.require_study()
        else:
            self.notify("The analysis is still running: try again in a moment.",
                        severity="warning")
        return False

    def action_trials(self) -> None:
        if not self._require_report():
            return
        table = self.query_one("#finding-trials", DataTable)
        if self.focused is table:
            self._open_trial()
            return
        if table.row_count:
            self.add_class("-trials")  # a short terminal shows them in the findings' place
            table.focus()
            table.move_cursor(row=0)
        else:
            self.notify("This finding rests on no particular trial.", severity="information")

    @on(DataTable.RowSelected, "#finding-trials")
    def _trial_chosen(self) -> None:
        self._open_trial()

    def _open_trial(self) -> None:
        table = self.query_one("#finding-trials", DataTable)
        if not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.tuneplay.show_trial(int(str(key)))

    def action_back(self) -> None:
        if self.tuneplay.notices.errors:  # esc dismisses a standing error first, as elsewhere
            self.tuneplay.action_dismiss_notice()
            return
        if self._require_report():
            self.remove_class("-trials")
            self.remove_class("-findings-hidden")
            self.query_one(FindingsList).focus()

    def action_axis(self, step: int) -> None:
        if not self._require_report():
            return
        if not self.report.axis_plots:
            self.notify("No axis plots: the study searches no hyperparameter.",
                        severity="warning")
            return
        self.axis_index = (self.axis_index + step) % len(self.report.axis_plots)
        if self.one_chart and self.view != "axis":  # the axis plot takes the one place
            self.view = "axis"
            self._draw_detail()
        self._draw_axis()

    def action_view(self) -> None:
        if self.require_study() is None:
            return
        views = SHORT_VIEWS if self.one_chart else VIEWS
        self.view = views[(views.index(self.view) + 1) % len(views)] if self.view in views \
            else views[0]
        if self.report is None:
            self.notify(f"The analysis is still running: the {self.view} view shows when it is "
                        "ready.", severity="warning")
            return
        self._draw_axis()
        self._draw_detail()

    def action_findings(self) -> None:
        if not self._require_report():
            return
        self.toggle_class("-findings-hidden")
        hidden = self.has_class("-findings-hidden")
        self.notify("findings hidden: f shows them again" if hidden else "findings shown")

    def action_next_round(self) -> None:
        """Open the plan's study file in Design (not written until saved or launched there)."""
        if not self._require_report():
            return
        plan = getattr(self.report, "next_round", None)
        if plan is None:
            self.notify("No next round to draft yet: the plan needs at least 3 finished trials.",
                        severity="warning")
            return
        path = Path(plan.path)
        if not path.is_absolute():  # beside the study's file, which is named from the project
            path = self.tuneplay.project_dir / path
        self.tuneplay.open_draft(plan.draft, str(path))

    def action_reanalyze(self) -> None:
        if self.require_study() is None:
            return
        self.report_key = None
        self.refresh_view()
