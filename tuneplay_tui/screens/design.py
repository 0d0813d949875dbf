"""2 Study design: roles, ranges and scales per hyperparameter; search; budget; preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import DataTable, Static

from tuneplay_tui import format as fmt
from tuneplay_tui.design_model import DesignError, DesignModel
from tuneplay_tui.messages import PreviewReady
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.design_preview import draw_preview
from tuneplay_tui.screens.dialogs import ConfirmScreen, FormScreen, PromptScreen
from tuneplay_tui.widgets.charts import Chart

ROLE_STYLE = {"scientific": f"bold {fmt.VIOLET}", "nuisance": f"bold {fmt.BLUE}", "fixed": fmt.GREY}
SEARCH_ADVICE = {"quasi_random": "quasi-random: for exploration (even coverage, easy to analyse)",
                 "bayesian": "Bayesian: for exploitation once the search space is well understood"}
SETTING_FIELDS = ("name", "goal", "budget", "max_train_steps", "eval_every", "seed")
NO_DESIGN = ("No experiment yet: open a study file (h, then o), or create an experiment "
             "(h, then n) to design from its baseline.")


class DesignScreen(StageScreen):
    STAGE = "design"
    TITLE_TEXT = "2 Study design — one question at a time"
    HELP = """
A study answers one question. Sort every hyperparameter into a role:

* **scientific** — the values being compared ("weight decay 0 vs 1e-4"); in the default
  per-value mode each nuisance point is tried once with every scientific value, the
  fairest comparison.
* **nuisance** — must be re-tuned for the comparison to be fair (the learning rate almost
  always is): searched over a range on a scale (log for rates, linear for decays).
* **fixed** — held at the baseline's value; the conclusions only hold at that value.

Use **quasi-random** search while exploring (even coverage, every plot stays readable) and
**Bayesian** optimisation to exploit a well-understood space. The **budget** splits over
the scientific values; too few points per nuisance dimension and the comparison rests on
luck. max_train_steps is fixed within a study (never tuned). The preview shows the points
the study will try; the file saved under `studies/` is exactly what was validated.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "role", "Role"),
        Binding("e", "edit", "Edit"),
        Binding("l", "scale", "Scale"),
        Binding("m", "search", "Search", tooltip="quasi-random (explore) / Bayesian (exploit)"),
        Binding("plus,equals_sign", "budget(1)", "+Budget", show=False),
        Binding("minus", "budget(-1)", "-Budget", show=False),
        Binding("t", "settings", "Settings", show=False,
                tooltip="Name, goal, budget, max_train_steps, eval_every, seed"),
        Binding("v", "pair", "Preview axes", show=False),
        Binding("u", "reset", "From baseline", show=False),
        Binding("w", "write", "Save"),
        Binding("L", "launch", "Launch"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.model: DesignModel | None = None
        self.path = ""
        self.dirty = False
        self.loaded_for: int | None = None
        self.error: str | None = None
        self.valid_text: str | None = None
        self.opened_toml: str | None = None
        self.spec: Any = None
        self.points: list[Any] = []
        self.pair = 0
        self._design_asked: object | None = None  # the baseline design on its way, if any

    def compose_body(self) -> ComposeResult:
        yield Static(id="design-settings", classes="summary")
        with Horizontal(id="design-body", classes="body"):
            yield DataTable(id="design-table", cursor_type="row")
            yield Chart(id="preview-chart")
        yield Static(id="design-hint", classes="detail-line")
        yield Static(id="design-status", classes="detail-line")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#design-table", DataTable)
        for key, label, width in (("name", "hyperparameter", 16), ("role", "role", 10),
                                  ("range", "range / value", 20), ("scale", "scale", 11),
                                  ("help", "what it is", 40)):
            table.add_column(label, key=key, width=width)
        table.border_title = "hyperparameters · space role · e edit · l scale"

    # ------------------------------------------------------------- loading
    def update_view(self) -> None:
        eid = self.state.experiment_id
        if eid is None and self.model is None:
            widget = self.query_one("#design-settings", Static)
            widget._last_line = NO_DESIGN  # type: ignore[attr-defined]
            widget.update(NO_DESIGN)
            return
        if eid is not None and (self.model is None or (not self.dirty and self.loaded_for != eid)):
            self.loaded_for = eid
            asked = self._design_asked = object()
            self.engine_call("study design", lambda: self.facade.baseline_design(eid),
                             lambda design: self._load_design(design, asked))
        if self.model is not None:
            self._settings_line()  # the experiment it launches into may exist by now

    def _load_design(self, design: dict[str, Any], asked: object | None = None) -> None:
        if asked is not self._design_asked:
            return  # a study file was opened meanwhile: it wins over the baseline's design
        self._design_asked = None
        self.model = DesignModel.from_dict(design, self.tuneplay.workload_info())
        exp = self.state.experiment()
        if exp is not None:  # launch into this experiment, not one named after the workload
            self.model.study.setdefault("experiment", exp.experiment.name)
        self.path, self.opened_toml = "", None
        self.dirty = False
        self._changed(rebuild=True)

    def load_text(self, text: str, path: str) -> None:
        """Open a study file's text for review before launching (``tuneplay FILE``).

        The rows are the file's own, described by the file's workload: never the selected
        experiment's baseline or workload, which may be another model altogether."""
        try:
            ref = DesignModel.workload_of(text)
            info = self.tuneplay.workload_info(ref) if ref else None
            self.model = DesignModel.from_text(text, info, add_missing=False)
        except DesignError as exc:
            self.notify(f"{path}: {exc}", severity="error")
            return
        self._design_asked = None  # a baseline design still on its way must not replace it
        self.path, self.dirty, self.loaded_for = path, True, self.state.experiment_id
        self.opened_toml = self.model.to_toml()  # the file as opened: launch it untouched
        self._changed(rebuild=True)

    def target_path(self) -> str:
        if self.path:
            return self.path
        name = self.model.study.get("name", "study") if self.model else "study"
        return str(self.tuneplay.project_dir / "studies" / f"{name}.toml")

    # ------------------------------------------------------------- drawing
    def _changed(self, rebuild: bool = False) -> None:
        if self.model is None:
            return
        self._fill_table(rebuild)
        self._settings_line()
        wide = self.size.width >= 100
        hint = self.model.allocation_hint(compact=not wide)
        if wide:
            hint += f" · {SEARCH_ADVICE[self.model.study.get('search') or 'quasi_random']}"
        self.query_one("#design-hint", Static).update(Content.styled(hint, "$foreground-muted"))
        self._validate()

    def _settings_line(self) -> None:
        """``study "x" → experiment e (new: L creates it) · quasi_random · budget 16 · …``."""
        assert self.model is not None
        s = self.model.study
        wide = self.size.width >= 100
        line = Content.assemble(
            ("study ", "$foreground-muted"), (f'"{s.get("name", "")}"', "bold"),
            self._experiment_note(), " · ", (str(s.get("search") or "quasi_random"), "bold"),
            " · budget ", (str(s.get("budget", "")), "bold"),
            f" · {s.get('max_train_steps', '')} steps · eval {s.get('eval_every', '')}",
            f" · seed {s.get('seed', 0)}" if wide else "", (" (t edits)" if wide else "",
                                                              "$foreground-muted"))
        widget = self.query_one("#design-settings", Static)
        if getattr(widget, "_last_line", None) != line.plain:  # may wrap: a layout pass
            widget._last_line = line.plain  # type: ignore[attr-defined]
            widget.update(line)

    def _experiment_note(self) -> Content:
        """Which experiment launching puts the study in, when it is not the selected one."""
        assert self.model is not None
        name = getattr(self.spec, "experiment", "") or self.model.study.get("experiment", "")
        if not name:
            return Content("")
        workload = getattr(self.spec, "workload_ref", "") or self.model.study.get("workload", "")
        found = self.tuneplay.find_experiment(name)
        if found is None:
            return Content.assemble(" → ", (f"new experiment {name}", "bold $accent"),
                                    (" (L creates it)", "$foreground-muted"))
        if workload and found.experiment.workload != workload:
            return Content.styled(f" → experiment {name} runs {found.experiment.workload}, "
                                  f"not {workload}: set [study] experiment", "bold $error")
        if found.experiment.id != self.state.experiment_id:
            return Content.assemble(" → ", (f"experiment {name}", "bold"))
        return Content("")

    def _fill_table(self, rebuild: bool) -> None:
        assert self.model is not None
        table = self.query_one("#design-table", DataTable)
        if rebuild or table.row_count != len(self.model.rows):
            row = table.cursor_row
            table.clear()
            for r in self.model.rows:
                table.add_row(*self._cells(r), key=r.name)
            table.move_cursor(row=min(max(row, 0), max(table.row_count - 1, 0)))
            return
        for r in self.model.rows:
            for key, cell in zip(("name", "role", "range", "scale", "help"), self._cells(r)):
                table.update_cell(r.name, key, cell)

    def _cells(self, r: Any) -> tuple[Any, ...]:
        bad = self.error is not None and f".{r.name}:" in self.error
        name = Text(r.name + (" ✗" if bad else ""), style=f"bold {fmt.RED}" if bad else "")
        scale = "" if r.role == "fixed" else r.scale
        return (name, Text(r.role, style=ROLE_STYLE[r.role]), r.describe(), scale, r.help)

    def _validate(self) -> None:
        assert self.model is not None
        text, path = self.model.to_toml(), self.target_path()
        status = self.query_one("#design-status", Static)
        status.update(Content.styled("checking…", "$foreground-muted"))

        def job() -> None:
            try:
                spec = self.facade.validate_study_text(text, path)
                points = self.facade.preview(spec)
            except Exception as exc:  # noqa: BLE001 (an error boundary)
                self.post_message(PreviewReady(text, error=fmt.one_line(exc)))
                return
            self.post_message(PreviewReady(text, spec, points))

        self.run_worker(job, thread=True, group="preview", name="preview", exclusive=True,
                        exit_on_error=False)

    def on_preview_ready(self, message: PreviewReady) -> None:
        if self.model is None or message.text != self.model.to_toml():
            return  # an older design's answer
        had_error = self.error
        self.error = message.error
        status = self.query_one("#design-status", Static)
        shown = self.tuneplay.show_path(self.target_path())
        if message.error is not None:
            self.valid_text, self.spec = None, None
            error = message.error.replace(self.target_path(), shown)
            status.update(Content.assemble(("✗ ", "bold $error"), (error, "$error")))
        else:
            self.valid_text, self.spec, self.points = message.text, message.spec, list(message.points)
            status.update(Content.assemble(("✓ ", "bold $success"), "valid · ",
                                           (shown, "$foreground-muted"),
                                           ("  w saves · L saves and launches", "$accent")))
        if had_error != self.error:
            self._fill_table(rebuild=False)
        self._settings_line()  # the spec names the experiment it launches into
        chart = self.query_one("#preview-chart", Chart)
        if message.error is not None:
            chart.border_title = "preview"
            chart.draw_message("fix the error below to see the points")
        else:
            self.pair = draw_preview(chart, self.spec, self.points, self.pair)

    # ------------------------------------------------------------- editing
    def _row_name(self) -> str | None:
        table = self.query_one("#design-table", DataTable)
        if self.model is None or not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _require_model(self) -> bool:
        """True when there is a design to edit; else say how to get one."""
        if self.model is None:
            self.notify(NO_DESIGN if self.state.experiment_id is None
                        else "The design is still loading: try again in a moment.",
                        severity="warning")
            return False
        return True

    def _require_row(self) -> str | None:
        name = self._row_name() if self._require_model() else None
        if name is None and self.model is not None:
            self.notify("No hyperparameter selected.", severity="warning")
        return name

    def _edit(self, fn: Any, *args: Any) -> Any:
        try:
            out = fn(*args)
        except DesignError as exc:
            self.notify(str(exc), title="design", severity="error")
            return None
        self.dirty = True
        self._changed()
        return out

    def action_role(self) -> None:
        name = self._require_row()
        if name is not None and self.model is not None:
            self._edit(self.model.cycle_role, name)

    def action_scale(self) -> None:
        name = self._require_row()
        if name is not None and self.model is not None:
            self._edit(self.model.cycle_scale, name)

    @on(DataTable.RowSelected, "#design-table")
    def _chosen(self) -> None:
        self.action_edit()

    def action_edit(self) -> None:
        name = self._require_row()
        if name is None or self.model is None:
            return
        r = self.model.row(name)
        hint = ("a value (number, true/false or a name)" if r.role == "fixed" else
                "a range 'low .. high' (scale: l) or choices 'a, b, c'")
        self.app.push_screen(PromptScreen(f"{name} ({r.role})", hint, r.describe().strip("{}")),
                             lambda text: self._typed(name, text))

    def _typed(self, name: str, text: str | None) -> None:
        if text is not None and self.model is not None:
            self._edit(self.model.set_text, name, text)

    def action_search(self) -> None:
        if self._require_model() and self.model is not None:
            self._edit(self.model.toggle_search)

    def action_budget(self, direction: int) -> None:
        if self._require_model() and self.model is not None:
            self._edit(self.model.bump_budget, direction)

    def action_pair(self) -> None:
        if not self._require_model():
            return
        if self.spec is None:
            self.notify("No preview to turn: fix the design's error first.", severity="warning")
            return
        self.pair += 1
        self.pair = draw_preview(self.query_one("#preview-chart", Chart), self.spec,
                                 self.points, self.pair)

    def action_reset(self) -> None:
        if self.state.experiment_id is None:
            self.notify("No baseline to start from: " + NO_DESIGN, severity="warning")
            return
        self.model, self.dirty, self.loaded_for = None, False, None
        self.refresh_view()

    def action_settings(self) -> None:
        if not self._require_model() or self.model is None:
            return
        fields = [(k, k, str(self.model.study.get(k, ""))) for k in SETTING_FIELDS]
        self.app.push_screen(FormScreen("Study settings", fields,
                                        "max_train_steps is fixed for every trial of the study"),
                             self._settings)

    def _settings(self, answer: dict[str, str] | None) -> None:
        if not answer or self.model is None:
            return
        for key, value in answer.items():
            if str(self.model.study.get(key, "")) != value:
                if key == "name":
                    self.path = ""
                self._edit(self.model.set_setting, key, value)

    def action_write(self) -> None:
        self._save(launch=False)

    def action_launch(self) -> None:
        self._save(launch=True)

    def _save(self, launch: bool) -> None:
        if not self._require_model() or self.model is None:
            return
        text = self.model.to_toml()
        if self.valid_text != text:
            why = self.error or "still checking the design"
            self.notify(f"Not saved: {why}", title="study design", severity="error")
            return
        path = self.target_path()
        untouched = self.path and text == self.opened_toml  # an opened file, not edited
        if launch and untouched:
            self.engine_call("launch", lambda: self.facade.launch_file(path), self._launched)
        elif untouched:
            self.notify(f"{self.tuneplay.show_path(path)} is unchanged", title="study design")
        elif launch:
            self._confirm_overwrite(path, lambda: self.engine_call(
                "launch", lambda: self.facade.save_and_launch(text, path), self._launched))
        else:
            self._confirm_overwrite(path, lambda: self._write(Path(path), text))

    def _confirm_overwrite(self, path: str, then: Any) -> None:
        """Ask before rewriting a file someone wrote (its comments and layout would go)."""
        target = Path(path)
        if target.exists() and target.read_text(encoding="utf-8") != self.model.to_toml():  # type: ignore[union-attr]
            self.app.push_screen(ConfirmScreen(
                f"Overwrite {self.tuneplay.show_path(path)}?",
                "The file is rewritten from the table: its comments and layout are not kept."),
                lambda yes: then() if yes else None)
        else:
            then()

    def _write(self, target: Path, text: str) -> None:
        def job() -> str:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            return str(target)

        self.engine_call("save study file", job,
                         lambda p: self.notify(f"saved {self.tuneplay.show_path(p)}"))
        self.path, self.opened_toml = str(target), text

    def _launched(self, study: Any) -> None:
        self.notify(f'study "{study.name}" launched: its trials are queued', title="launch")
        self.dirty = False
        self.tuneplay.follow_new_study(study)
