"""1 Baseline: workload, architecture, optimizer, batch size, constant learning rate; run it."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from engine.workloads.builtin import OPTIMIZER_HPARAMS
from tuneplay_tui import format as fmt
from tuneplay_tui.design_model import DesignError, parse_scalar
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.dialogs import PromptScreen
from tuneplay_tui.state import finished_count

OPTIMIZER_ADVICE = ("Start with a popular, well-understood optimizer. SGD with momentum "
                    "needs 2 hyperparameters tuned; Adam needs 4 — with a small budget, tune "
                    "only its learning rate (and β1) and fix the rest.")
BATCH_ADVICE = ("Batch size sets training speed, not validation performance: use the largest "
                "that still raises throughput, then re-tune the rest.")
LR_ADVICE = "The first baseline trains with a constant learning rate; add decay later."


def groups(info: Any, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(group, name) rows: architecture family first, then optimizer, batch size, the rest."""
    names = list(info.hyperparameters) if info and info.hyperparameters else list(config)
    shape = set(getattr(info, "shape_keys", ()) or ()) - {"batch_size"}
    opt = {"optimizer", *{h for hs in OPTIMIZER_HPARAMS.values() for h in hs}}
    rows = [("architecture", n) for n in names if n in shape or n == "activation"]
    rows += [("optimizer", n) for n in names if n in opt]
    rows += [("batch", n) for n in names if n == "batch_size"]
    rows += [("schedule", n) for n in names if n in ("schedule", "warmup_fraction")]
    seen = {n for _, n in rows}
    rows += [("other", n) for n in names if n not in seen]
    return rows


class BaselineScreen(StageScreen):
    STAGE = "baseline"
    TITLE_TEXT = "1 Baseline — a simple configuration that trains"
    HELP = """
The playbook starts every project from a **simple, reasonable baseline**: a well-known
architecture family, a standard optimizer, the largest batch size that still speeds up
training, and a **constant learning rate** (schedules come later). The goal is not a good
result yet but a configuration that trains and clearly **beats chance**, so later studies
have something to improve on.

* Optimizer: SGD with momentum has 2 hyperparameters to tune, Adam 4. Fewer tuned
  hyperparameters means fewer trials per study.
* Batch size: probe throughput at powers of two until memory runs out; pick the largest
  that still raises examples per second by more than 10%.

Edit values with `e`, save them as a new baseline version with `s`, run it with `r`.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit", tooltip="Edit the selected hyperparameter's value"),
        Binding("o", "optimizer", "Optimizer", tooltip="Cycle the optimizer"),
        Binding("b", "probe", "Probe", tooltip="Batch-size throughput probe at powers of two"),
        Binding("s", "save", "Save", tooltip="Save the edits as a new baseline version"),
        Binding("x", "discard", "Discard", tooltip="Forget the unsaved edits"),
        Binding("r", "run", "Run", tooltip="Run the baseline once; check it beats chance"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.edits: dict[str, Any] = {}
        self.edits_for: int | None = None  # the experiment the edits were made on
        self.probes: dict[int, Any] = {}  # experiment id -> its probe's recommendation
        self.probing: set[int] = set()  # experiments whose probe is running
        self._rows_for: tuple[Any, ...] = ()

    def compose_body(self) -> ComposeResult:
        yield Static(id="base-summary", classes="summary")
        with Horizontal(id="base-body", classes="body"):
            table: DataTable[Any] = DataTable(id="baseline-table", cursor_type="row")
            yield table
            with Vertical(id="base-right"):
                yield Static(id="optimizer-panel", classes="panel")
                yield Static(id="batch-panel", classes="panel")
        yield Static(id="base-run", classes="detail")

    def config(self) -> dict[str, Any]:
        base = self.state.baseline()
        info = self.tuneplay.workload_info()
        defaults = info.defaults() if info else {}
        return {**defaults, **(dict(base.config) if base else {}), **self.edits}

    def update_view(self) -> None:
        exp, base = self.state.experiment(), self.state.baseline()
        summary = self.query_one("#base-summary", Static)
        if self.edits_for != self.state.experiment_id:  # edits belong to one experiment
            self.edits.clear()
            self.edits_for = self.state.experiment_id
        if exp is None or base is None:
            summary.update(NO_EXPERIMENT)
            self.query_one("#baseline-table", DataTable).clear(columns=True)
            self._rows_for = ()
            return
        narrow = self.size.width < 100
        edited = (f" — {fmt.plural(len(self.edits), 'unsaved edit')}: s saves them as "
                  f"v{base.version + 1} · x discards")
        tail = ((edited, "bold $warning") if self.edits else
                (f" — {base.note}" if base.note and not narrow else "", "$foreground-muted"))
        summary.update(Content.assemble(
            (exp.experiment.name, "bold"), f" · {exp.experiment.workload} · ",
            (f"baseline v{base.version}", "bold"), tail))
        self._fill_table()
        self._panels()
        self.query_one("#base-run", Static).update(self._run_status())

    def _fill_table(self) -> None:
        table = self.query_one("#baseline-table", DataTable)
        table.border_title = "baseline configuration · e edit · o optimizer"
        info = self.tuneplay.workload_info()
        config = self.config()
        key = (id(info), tuple(sorted((k, repr(v)) for k, v in config.items())),
               tuple(sorted(self.edits)))
        if key == self._rows_for:
            return
        self._rows_for = key
        row = table.cursor_row
        table.clear(columns=True)
        for k, label, w in (("group", "", 12), ("name", "hyperparameter", 16),
                            ("value", "value", 12), ("help", "what it is", 48)):
            table.add_column(label, key=k, width=w)
        hps = info.hyperparameters if info and info.hyperparameters else {}
        for group, name in groups(info, config):
            edited = name in self.edits
            value = Text(fmt.value(config.get(name)) + (" *" if edited else ""),
                         style="bold " + fmt.AMBER if edited else "bold")
            help_text = getattr(hps.get(name), "help", "")
            table.add_row(Text(group, style="dim"), name, value, help_text, key=name)
        table.move_cursor(row=min(row, table.row_count - 1))

    def _panels(self) -> None:
        config = self.config()
        current = str(config.get("optimizer", ""))
        choices = optimizer_choices(self.tuneplay.workload_info(), config)
        if choices:
            tuned = OPTIMIZER_HPARAMS.get(current, ())
            lines = [Content.assemble(("▸ ", "$accent"), (current, "bold $accent"),
                                      f": {len(tuned)} to tune ({', '.join(tuned)})")]
            others = [Content.assemble((n, "bold" if n == current else ""),
                                       f" {len(OPTIMIZER_HPARAMS.get(n, ()))}") for n in choices]
            lines.append(Content.styled("to tune: ", "$foreground-muted")
                         + Content(" · ").join(others))
        else:
            lines = [Content.styled("this workload has no optimizer hyperparameter", "bold")]
        lines.append(Content.styled(OPTIMIZER_ADVICE, "$foreground-muted"))
        if config.get("schedule", "constant") != "constant":
            lines.append(Content.styled(f"schedule is {config['schedule']}: {LR_ADVICE}",
                                        "$warning"))
        panel = self.query_one("#optimizer-panel", Static)
        panel.border_title = "optimizer · o cycles"
        panel.update(Content("\n").join(lines))
        batch = self.query_one("#batch-panel", Static)
        batch.border_title = "batch size · b probes throughput"
        eid = self.state.experiment_id
        if eid in self.probing:
            batch.update(Content.styled("probing throughput at powers of two, each size "
                                        "measured 3 times (a minute or so)…", "$accent"))
        else:
            rec = self.probes.get(eid) if eid is not None else None
            batch.update(probe_content(rec, config.get("batch_size"),
                                       compact=self.has_class("-short")))

    def _run_status(self) -> Content:
        runs = self.state.baseline_runs()
        base = self.state.baseline()
        if not runs:
            return Content.assemble(("baseline run: ", "bold"), "not run yet — r runs baseline v"
                                    f"{base.version if base else '?'} once and checks it beats chance")
        s = runs[-1]
        metric, mode = s.study.spec.get("metric", ""), s.study.spec.get("mode", "min")
        head = Content.assemble(("baseline run: ", "bold"))
        if finished_count(s.counts) < s.total:
            return head + Content.styled(f"running ({finished_count(s.counts)}/{s.total} done)", "$accent")
        if s.best_value is None:
            return head + Content.styled("no result (it failed or diverged): check the log", "$error")
        info = self.tuneplay.workload_info()
        chance = (info.chance or {}).get(metric) if info else None
        value = f"{metric} {fmt.metric(s.best_value)}"
        if chance is None:
            return head + Content(f"{value} (chance level unknown for this workload)")
        beats = s.best_value < chance if mode == "min" else s.best_value > chance
        verdict = (("beats chance ✓", "bold $success") if beats else
                   ("does NOT beat chance ✗ — fix the setup before tuning", "bold $error"))
        return head + Content.assemble(f"{value} vs chance {fmt.metric(chance)} — ", verdict)

    # ------------------------------------------------------------- actions
    def _selected(self) -> str | None:
        table = self.query_one("#baseline-table", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @on(DataTable.RowSelected, "#baseline-table")
    def _chosen(self) -> None:
        self.action_edit()

    def _require_baseline(self) -> bool:
        """True when an experiment (with its baseline) is selected; else say what to do."""
        if self.state.experiment() is None or self.state.baseline() is None:
            self.notify(NO_EXPERIMENT, severity="warning")
            return False
        return True

    def action_edit(self) -> None:
        if not self._require_baseline():
            return
        name = self._selected()
        if name is None:
            self.notify("No hyperparameter to edit: the workload declares none.",
                        severity="warning")
            return
        current = fmt.value(self.config().get(name))
        self.app.push_screen(PromptScreen(f"{name} (baseline)", "a number, true/false or a name",
                                          current), lambda text: self._edited(name, text))

    def _edited(self, name: str, text: str | None) -> None:
        if text is None:
            return
        try:
            value = parse_scalar(text)
            info = self.tuneplay.workload_info()
            hp = (info.hyperparameters or {}).get(name) if info else None
            problem = hp_problem(hp, value)
            if problem:
                raise DesignError(f"{name}: {problem}")
        except DesignError as exc:
            self.notify(str(exc), title="baseline", severity="error")
            return
        self._set_edit(name, value)
        self.refresh_view()

    def action_optimizer(self) -> None:
        if not self._require_baseline():
            return
        config = self.config()
        names = optimizer_choices(self.tuneplay.workload_info(), config)
        if not names:
            workload = self.state.experiment().experiment.workload  # type: ignore[union-attr]
            self.notify(f"{workload} has no optimizer hyperparameter: nothing to cycle "
                        "(e edits the values it has).", severity="warning")
            return
        current = str(config.get("optimizer", names[0]))
        nxt = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
        self._set_edit("optimizer", nxt)
        tuned = OPTIMIZER_HPARAMS.get(nxt, ())
        self.notify(f"optimizer {nxt}: {fmt.plural(len(tuned), 'hyperparameter')} to tune"
                    + (f" ({', '.join(tuned)})" if tuned else ""))
        self.refresh_view()

    def _set_edit(self, name: str, value: Any) -> None:
        """An edit, or none when it puts back the saved value."""
        base = self.state.baseline()
        saved = {**self._defaults(), **(dict(base.config) if base else {})}
        if name in saved and saved[name] == value:
            self.edits.pop(name, None)
        else:
            self.edits[name] = value

    def _defaults(self) -> dict[str, Any]:
        info = self.tuneplay.workload_info()
        return info.defaults() if info else {}

    def action_discard(self) -> None:
        if not self.edits:
            self.notify("No unsaved edits to discard.", severity="warning")
            return
        n = len(self.edits)
        self.edits.clear()
        self.notify(f"discarded {fmt.plural(n, 'unsaved edit')}", title="baseline")
        self.refresh_view()

    def action_probe(self) -> None:
        if not self._require_baseline():
            return
        exp = self.state.experiment()
        assert exp is not None
        info = self.tuneplay.workload_info()
        if info is None or "batch_size" not in (info.hyperparameters or {}):
            self.notify(f"{exp.experiment.workload} declares no batch_size to probe "
                        "(the probe runs built-in workloads).", severity="warning")
            return
        eid = exp.experiment.id
        if eid in self.probing:
            self.notify("The probe is still running: its table shows when it is done.",
                        severity="warning")
            return
        self.probing.add(eid)

        def probe() -> Any:
            try:
                return self.facade.probe_batch(exp.experiment.workload)
            except Exception as exc:  # noqa: BLE001 (comes back as the answer: see done)
                return exc

        def done(rec: Any) -> None:
            self.probing.discard(eid)
            if isinstance(rec, Exception):
                self.notify(fmt.one_line(rec), title="batch probe failed", severity="error")
            else:
                self.probes[eid] = rec
            self.refresh_view()

        self.engine_call("batch probe", probe, done)
        self.refresh_view()

    def action_save(self) -> None:
        if not self._require_baseline():
            return
        eid = self.state.experiment_id
        if not self.edits:
            self.notify("Nothing to save: edit a value first (e).", severity="warning")
            return
        save = getattr(self.facade, "save_baseline", None)
        if save is None:
            self.notify("This engine cannot save baseline versions yet.", severity="error")
            return
        config, note = self.config(), "edited: " + ", ".join(sorted(self.edits))

        def done(b: Any) -> None:
            self.edits.clear()
            self.notify(f"saved baseline v{b.version}", title="baseline")

        self.engine_call("save baseline", lambda: save(eid, config, note), done)

    def action_run(self) -> None:
        if not self._require_baseline():
            return
        eid = self.state.experiment_id
        if self.edits:
            self.notify("Save the edits first (s) or discard them (x): the run uses the saved "
                        "baseline.", severity="warning")
            return
        self.engine_call("run baseline", lambda: self.facade.run_baseline(eid),
                         lambda study: self.notify(f'baseline run "{study.name}" queued'))


NO_EXPERIMENT = ("No experiment yet: open a study file (h, then o; launching it creates its "
                 "experiment) or create one (h, then n).")


def optimizer_choices(info: Any, config: dict[str, Any]) -> list[str]:
    """The optimizers ``o`` cycles through: the workload's own choices; none for a workload
    that declares no optimizer (or, declaring nothing, has none in its baseline)."""
    hps = getattr(info, "hyperparameters", None)
    if hps is not None:
        hp = hps.get("optimizer")
        if hp is None:
            return []
        return [str(c) for c in hp.choices] if hp.choices else list(OPTIMIZER_HPARAMS)
    return list(OPTIMIZER_HPARAMS) if "optimizer" in config else []


def hp_problem(hp: Any, value: Any) -> str:
    """Why ``value`` does not fit a workload hyperparameter (empty when it does)."""
    if hp is None:
        return ""
    if hp.choices is not None and value not in hp.choices:
        return f"one of {', '.join(map(str, hp.choices))}, not {value!r}"
    if hp.kind in ("float", "int") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"must be a number, got {value!r}"
    if hp.kind == "int" and not float(value).is_integer():
        return f"must be a whole number, got {value!r}"
    if hp.low is not None and isinstance(value, (int, float)) and value < hp.low:
        return f"must be at least {hp.low}"
    if hp.high is not None and isinstance(value, (int, float)) and value > hp.high:
        return f"must be at most {hp.high}"
    return ""


USE_MARK = {False: "  ◂ use", True: " ◂"}


def probe_content(rec: Any, current: Any, compact: bool = False) -> Content:
    """The throughput probe's table and its recommendation; ``compact`` (a short terminal)
    puts the recommendation first and keeps the rows next to the chosen size."""
    if rec is None:
        return Content.assemble(f"batch_size {fmt.value(current)} · ",
                                ("b measures examples/s and memory at powers of two until OOM.\n",
                                 "$foreground-muted"), (BATCH_ADVICE, "$foreground-muted"))
    probes = list(rec.probes)
    if compact:
        at = next((i for i, p in enumerate(probes) if p.batch_size == rec.batch_size), 0)
        probes = probes[max(at - 1, 0): at + 2]
    lines = [Content.styled("batch     examples/s   memory   gain", "bold")]
    for p in probes:
        if p.oom:
            lines.append(Content.styled(f"{p.batch_size:>5}     out of memory", "$error"))
            continue
        gain = f"{p.gain_over_previous:+.0%}" if p.gain_over_previous is not None else ""
        mem = f"{p.peak_mem_bytes / 1e9:.2f} GB" if p.peak_mem_bytes else "—"
        chosen = p.batch_size == rec.batch_size
        lines.append(Content.styled(f"{p.batch_size:>5} {p.examples_per_s or 0:>14,.0f} {mem:>8} {gain:>6}"
                                    + (USE_MARK[compact] if chosen else ""),
                                    "bold $success" if chosen else ""))
    reason = Content.styled(rec.reason, "$accent")
    return Content("\n").join([reason, *lines] if compact else [*lines, reason])
