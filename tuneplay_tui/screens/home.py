"""Home: the workspace's experiments, their baselines, studies and latest decisions."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import DataTable, Static

from engine.facade import ExperimentSummary, StudySummary
from tuneplay_tui import format as fmt
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.dialogs import FormScreen, OpenStudyScreen
from tuneplay_tui.state import finished_count, is_baseline_run

COLUMNS = (("name", "experiment / study", 27), ("what", "workload / search", 18),
           ("base", "baseline", 8), ("progress", "progress", 19), ("best", "best", 17),
           ("decision", "latest decision", 17))


class HomeScreen(StageScreen):
    STAGE = "home"
    TITLE_TEXT = "Home — experiments and studies"
    HELP = """
An **experiment** is one workload's tuning campaign: a versioned **baseline** (a full
configuration and how it is judged), an ordered list of **studies** (each answers one
question, e.g. "does weight decay help?") and a **decision log**. The playbook's loop is
incremental: start simple, run a study, look at it, adopt only changes backed by strong
evidence into the next baseline, repeat.

Pick a study to follow it (the header shows it on every screen); the latest study is
selected by default. Trials run in the background engine: closing the app does not stop
them, and opening it tomorrow shows where things stand.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", tooltip="Follow the highlighted experiment or study",
                priority=True),  # before the table's own enter, which says nothing when empty
        Binding("n", "new_experiment", "New experiment"),
        Binding("o", "open_file", "Open study file"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="home-summary", classes="summary")
        table: DataTable[Any] = DataTable(id="workspace-table", cursor_type="row")
        table.border_title = "experiments"
        yield table
        yield Static(id="home-detail", classes="detail")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#workspace-table", DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)

    def update_view(self) -> None:
        snap = self.state.snapshot
        summary = self.query_one("#home-summary", Static)
        if snap is None:
            summary.update("reading the workspace…" if self.state.error is None
                           else f"cannot read the workspace: {self.state.error}")
            return
        n = len(snap.experiments)
        summary.update(Content.assemble(
            fmt.plural(n, "experiment"), ("  ·  ", "$foreground-muted"),
            f"{self.state.active_trials()} trials queued or running", ("  ·  ", "$foreground-muted"),
            ("workspace ", "$foreground-muted"), snap.workspace))
        self._fill_table(snap.experiments)
        self._show_detail()

    def _fill_table(self, experiments: Any) -> None:
        table = self.query_one("#workspace-table", DataTable)
        rows = []
        for exp in experiments:
            rows.append((f"e{exp.experiment.id}", experiment_row(exp)))
            for s in sorted(exp.studies, key=lambda s: s.study.id):
                rows.append((f"s{s.study.id}", study_row(s, exp)))
        current = [str(k.value) for k in table.rows]
        if current == [k for k, _ in rows]:
            for key, cells in rows:
                for (col, _, _), cell in zip(COLUMNS, cells):
                    if str(table.get_cell(key, col)) != str(cell):
                        table.update_cell(key, col, cell)
            return
        selected = self._selected_key() or f"s{self.state.study_id}"
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if not rows:
            self.query_one("#home-detail", Static).update(EMPTY)
            return
        keys = [k for k, _ in rows]
        table.move_cursor(row=keys.index(selected) if selected in keys else 0)

    def _selected_key(self) -> str | None:
        table = self.query_one("#workspace-table", DataTable)
        if not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # noqa: BLE001 (an error boundary)
            return None

    @on(DataTable.RowHighlighted, "#workspace-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        key = self._selected_key()
        detail = self.query_one("#home-detail", Static)
        if key is None:
            detail.update(EMPTY)
            return
        exp, study = self._lookup(key)
        detail.update(study_detail(study) if study else experiment_detail(exp) if exp else "")

    def _lookup(self, key: str) -> tuple[ExperimentSummary | None, StudySummary | None]:
        snap = self.state.snapshot
        for exp in snap.experiments if snap else ():
            if key == f"e{exp.experiment.id}":
                return exp, None
            for s in exp.studies:
                if key == f"s{s.study.id}":
                    return exp, s
        return None, None

    # ------------------------------------------------------------- actions
    @on(DataTable.RowSelected, "#workspace-table")
    def _selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        key = self._selected_key()
        exp, study = self._lookup(key) if key else (None, None)
        if exp is None:
            self.notify("Nothing to open yet: n creates an experiment, o opens a study file.",
                        severity="warning")
            return
        if study is None:
            self.tuneplay.select_experiment(exp.experiment.id)
            latest = self.state.study_summary()
            self.tuneplay.action_stage(natural_stage(latest) if latest else "baseline")
        elif is_baseline_run(study.study):
            self.tuneplay.select_experiment(exp.experiment.id)
            self.tuneplay.action_stage("baseline")
        else:
            self.tuneplay.select_study(study.study.id)
            self.tuneplay.action_stage(natural_stage(study))

    def action_new_experiment(self) -> None:
        names = ", ".join(w.ref for w in self.facade.workloads())
        fields = [("name", "name", ""), ("workload", "workload", "builtin:digits-mlp"),
                  ("metric", "metric", ""), ("mode", "mode (min/max)", ""),
                  ("max_train_steps", "max_train_steps", "1000")]
        hint = (f"workload: a built-in ({names}), a Python entry point package.module:function, "
                "or a command: cmd: python train.py  (metric and mode default to the workload's)")
        self.app.push_screen(FormScreen("New experiment", fields, hint), self._create)

    def _create(self, answer: dict[str, str] | None) -> None:
        if not answer:
            return
        try:
            args = experiment_args(answer, self.facade.workloads())
        except ValueError as exc:
            self.notify(str(exc), title="new experiment", severity="error")
            return

        def done(exp: Any) -> None:
            self.notify(f"experiment {exp.name!r} created with baseline v1",
                        title="new experiment")
            self.tuneplay.pending_experiment = exp.name
            self.tuneplay.action_stage("baseline")

        self.engine_call("create experiment", lambda: self.facade.create_experiment(**args), done)

    def action_open_file(self) -> None:
        folder = self.tuneplay.project_dir / "studies"
        self.app.push_screen(OpenStudyScreen(folder), self._open_file)

    def _open_file(self, path: str | None) -> None:
        if path:
            self.tuneplay.open_study_file(path)


EMPTY = ("No experiments in this workspace yet.\n\n"
         "  n  create one from a built-in workload, a Python entry point or a command\n"
         "  o  open a study file (studies/*.toml): it creates its experiment on launch")


def natural_stage(s: StudySummary) -> str:
    """Where a study is best looked at: running while it runs, analysis once finished."""
    return "analysis" if s.total and finished_count(s.counts) >= s.total else "running"


def experiment_row(exp: ExperimentSummary) -> tuple[Any, ...]:
    base = f"v{exp.baselines[-1].version}" if exp.baselines else "—"
    studies = [s for s in exp.studies if not is_baseline_run(s.study)]
    decision = exp.decisions[-1] if exp.decisions else None
    names = {s.study.id: s.study.name for s in exp.studies}
    verdict = (Text(f"{decision.verdict} ({names.get(decision.study_id or -1, 'study')})",
                    style=fmt.VERDICT_STYLE.get(decision.verdict, "")) if decision else "—")
    return (Text(exp.experiment.name, style="bold"), exp.experiment.workload, base,
            fmt.plural(len(studies), "study", "studies"), "", verdict)


def study_row(s: StudySummary, exp: ExperimentSummary) -> tuple[Any, ...]:
    done = finished_count(s.counts)
    running = int(s.counts.get("RUNNING", 0))
    rerun_done, rerun_total = s.reruns  # seed reruns apart: a budget of 32 stays 32/32
    text = (f"{done - rerun_done}/{s.total - rerun_total} +{rerun_done}/{rerun_total} reruns" if rerun_total
            else f"{done}/{s.total} done")
    progress = Text(text + (f" · {running}▶" if running else ""),
                    style=fmt.STATE_STYLE["RUNNING"] if done < s.total else "")
    metric = s.study.spec.get("metric", "")
    best = f"{metric} {fmt.metric(s.best_value)}" if s.best_value is not None else "—"
    decisions = [d for d in exp.decisions if d.study_id == s.study.id]
    verdict = (Text(decisions[-1].verdict, style=fmt.VERDICT_STYLE.get(decisions[-1].verdict, ""))
               if decisions else "")
    what = "baseline run" if is_baseline_run(s.study) else str(s.study.spec.get("search", ""))
    return (f"  · {s.study.name}", what, f"v{s.study.spec.get('baseline_version', '') or '—'}"
            if not is_baseline_run(s.study) else "", progress, best, verdict)


def experiment_detail(exp: ExperimentSummary) -> Content:
    lines = [Content.styled(f"{exp.experiment.name}  ({exp.experiment.workload})", "bold")]
    if exp.baselines:
        b = exp.baselines[-1]
        lines.append(Content(f"baseline v{b.version}: {fmt.params_line(b.config)}"))
        lines.append(Content.styled(f"  judged by {b.metric} ({b.mode}), max_train_steps "
                                    f"{b.max_train_steps}", "$foreground-muted"))
        for old in reversed(exp.baselines):
            lines.append(Content.assemble((f"  v{old.version} ", "bold"),
                                          (old.note or "—", "$foreground-muted")))
    for d in exp.decisions[-2:]:
        lines.append(Content.assemble(("decision: ", "$foreground-muted"),
                                      (d.verdict.upper(), "bold"), f" — {d.rationale}"))
    lines.append(Content.styled("enter: follow it · n new experiment · o open study file",
                                "$foreground-muted"))
    return Content("\n").join(lines)


def study_detail(s: StudySummary) -> Content:
    spec = s.study.spec
    counts = ", ".join(f"{fmt.STATE_WORD.get(k, k)} {v}" for k, v in s.counts.items() if v)
    lines = [Content.styled(f'study "{s.study.name}"', "bold")]
    if spec.get("goal"):
        lines.append(Content(f"goal: {spec['goal']}"))
    lines.append(Content(f"{spec.get('search', '')} search · budget {spec.get('budget', '')} · "
                         f"max_train_steps {spec.get('max_train_steps', '')} · "
                         f"{spec.get('metric', '')} ({spec.get('mode', '')})"))
    lines.append(Content.styled(f"trials: {counts or 'none yet'}", "$foreground-muted"))
    lines.append(Content.styled("enter: follow it (running while it runs, analysis when done)",
                                "$foreground-muted"))
    return Content("\n").join(lines)


def experiment_args(answer: dict[str, str], workloads: Any) -> dict[str, Any]:
    """The facade's create_experiment arguments from the form (ValueError on a bad field)."""
    name = answer.get("name", "").strip()
    if not name:
        raise ValueError("name: give the experiment a name (letters, digits, '-', '_')")
    workload = answer.get("workload", "").strip()
    if workload.startswith(("cmd:", "command:")):
        workload = "command:" + workload.split(":", 1)[1].strip()
    elif ":" not in workload:
        raise ValueError(f"workload: {workload!r} is neither builtin:NAME, package.module:function "
                         "nor cmd: COMMAND")
    info = next((w for w in workloads if w.ref == workload), None)
    if workload.startswith("builtin:") and info is None:
        raise ValueError(f"workload: no built-in {workload!r}")
    try:
        steps = int(answer.get("max_train_steps", "").strip())
    except ValueError:
        raise ValueError("max_train_steps: must be a whole number of steps") from None
    mode = answer.get("mode", "").strip() or (info.default_mode if info else "min")
    if mode not in ("min", "max") or steps < 1:
        raise ValueError("mode must be min or max and max_train_steps at least 1")
    metric = answer.get("metric", "").strip() or (info.default_metric if info else "val_loss")
    return {"name": name, "workload": workload, "config": info.defaults() if info else {},
            "metric": metric, "mode": mode, "max_train_steps": steps}
