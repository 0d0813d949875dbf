"""3 Running: the live trial table, curves of the best or the selected trial, devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Static

from engine.store.base import Trial, TrialState
from tuneplay_tui import format as fmt
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.dialogs import ConfirmScreen, FormScreen, PromptScreen
from tuneplay_tui.widgets.charts import Chart
from tuneplay_tui.widgets.panels import devices_line
from tuneplay_tui.widgets.plotting import PALETTE, Line, legend
from tuneplay_tui.widgets.trial_table import FILTERS, TrialTable

BEST_K = 5
TRAIN_METRIC = "train_loss"
TAIL_LINES = 5
SHORT_TAIL_LINES = 2  # on a short terminal


def best_trials(trials: Sequence[Trial], mode: str, k: int = BEST_K) -> list[Trial]:
    """The ``k`` best search trials so far (running ones count by their best checkpoint)."""
    sign = 1.0 if mode == "min" else -1.0
    ok = [t for t in trials if t.best_value is not None and not t.state.is_infeasible()
          and t.kind == "search"]
    return sorted(ok, key=lambda t: (sign * float(t.best_value), t.id))[:k]  # type: ignore[arg-type]


class RunningScreen(StageScreen):
    STAGE = "running"
    TITLE_TEXT = "3 Running — trials, live"
    HELP = """
The engine runs the study's trials on the device slots, in the background: closing the
app (or losing SSH) does not stop them. Each trial trains to a fixed **max_train_steps**
(never tuned inside a study) and the best checkpoint is chosen retrospectively, so a trial's
**best** is its best evaluation, not its last.

**Diverged** trials (NaN/inf) are infeasible: they are data about where training breaks,
not noise, and the analysis keeps them. **Failed** trials crashed; their error is shown
below the table, with the last lines a command workload's program printed. Watch the
curves of the best trials while they run: if everything is still improving at the end,
the next study should train longer.

Select trials with `space` to act on several at once.
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "cancel", "Cancel", tooltip="Cancel the selected (or marked) trials"),
        Binding("p", "pause", "Pause"),
        Binding("r", "requeue", "Requeue", tooltip="Resume paused, retry failed or cancelled"),
        Binding("space", "mark", "Mark", show=False),
        Binding("plus,equals_sign", "add_trials", "Trials"),
        Binding("s", "slots", "Slots", show=False, tooltip="Device slots per GPU / CPU"),
        Binding("f", "follow", "Follow", show=False,  # the chart's title says it
                tooltip="Curves of the best 5 or of the selected trial (enter picks one)"),
        Binding("g", "chart", "Chart", tooltip="The curves in the table's place, and back "
                "(at 80x24 the table alone shows until then)"),
        Binding("slash", "filter", "Filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.follow_mode = "best"  # "best": best k curves; "trial": the selected trial
        self._drawn: tuple[Any, ...] = ()
        # (trial id, attempt) -> its output tail; an attempt that fails again is read again
        self._tails: dict[tuple[int, int], tuple[str, ...]] = {}
        self._tail_shown: tuple[Any, ...] | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(id="run-summary", classes="summary")
        with Horizontal(id="run-body", classes="body"):
            yield TrialTable(id="trials")
            yield Chart(id="run-chart")
        yield Static(id="run-detail", classes="detail-line")
        yield Static(id="run-tail", classes="detail")
        yield Static(id="devices", classes="detail-line")

    @property
    def table(self) -> TrialTable:
        return self.query_one("#trials", TrialTable)

    def update_view(self) -> None:
        study = self.state.study()
        if study is None:
            self.set_line("#run-summary", "No study to follow yet: design one on screen 2.")
            self.query_one("#run-chart", Chart).draw_message("no study")
            return
        spec = study.spec
        names = [p["name"] for p in (*spec.get("scientific", ()), *spec.get("nuisance", ()))]
        trials = self.state.study_trials()
        snap = self.state.snapshot
        self.table.configure(study.id, names, hosts=bool(snap and snap.hosts))
        self.table.border_title = f"trials · filter: {self.table.filter}"
        self.table.sync(trials, self.tuneplay.clock())
        self.set_line("#run-summary", self._summary(study.name, spec.get("metric", ""),
                                                    spec.get("mode", "min"), trials))
        self._follow(trials, spec.get("mode", "min"))
        self._draw_chart(spec.get("metric", ""), trials)
        self._show_detail(trials)
        self.set_line("#devices", devices_line(self.state.devices, self.state.device_history))

    def _summary(self, name: str, metric: str, mode: str, trials: Sequence[Trial]) -> Content:
        counts = self.state.state_counts()
        if self.size.width and self.size.width < 100:
            return self._compact_summary(counts, metric, mode, trials)
        order = ("RUNNING", "COMPLETED", "DIVERGED", "FAILED", "PAUSED", "CANCELLED", "QUEUED")
        parts: list[Any] = []
        for s in order:
            if counts.get(s):
                sep = " · " if parts else ""
                parts += [sep, (f"{counts[s]} {fmt.STATE_WORD[s]}", fmt.STATE_STYLE[s])]
        return Content.assemble(*parts, *self._best_eta(metric, mode, trials))

    def _compact_summary(self, counts: Any, metric: str, mode: str,
                         trials: Sequence[Trial]) -> Content:
        done = sum(counts.get(s, 0) for s in ("COMPLETED", "DIVERGED", "FAILED", "CANCELLED"))
        bad = counts.get("DIVERGED", 0) + counts.get("FAILED", 0)
        parts: list[Any] = [(f"{counts.get('RUNNING', 0)} running", fmt.STATE_STYLE["RUNNING"]),
                            f" · {counts.get('QUEUED', 0)} queued · {done} finished"]
        if bad:
            parts.append((f", {bad} infeasible", fmt.RED))
        return Content.assemble(*parts, *self._best_eta("", mode, trials))

    def _best_eta(self, metric: str, mode: str, trials: Sequence[Trial]) -> list[Any]:
        parts: list[Any] = []
        best = best_trials(trials, mode, 1)
        if best:
            label = f"{metric} " if metric else ""
            digits = 4 if metric else 3
            parts += [" · best ", (f"{label}{fmt.metric(best[0].best_value, digits)}", "bold"),
                      f" #{best[0].id}"]
        eta = self.state.study_eta(self.tuneplay.clock())
        if eta is not None:
            parts += [" · ETA ", (fmt.duration(eta), "bold")]
        return parts

    # ------------------------------------------------------------- curves
    def _follow(self, trials: Sequence[Trial], mode: str) -> None:
        ids = [t.id for t in best_trials(trials, mode)]
        sel = self.table.selected_id()
        if sel is not None and sel not in ids:
            ids.append(sel)
        self.tuneplay.poller.follow(self.state.study_id, ids)

    def _draw_chart(self, metric: str, trials: Sequence[Trial]) -> None:
        chart = self.query_one("#run-chart", Chart)
        curves = self.state.curves
        mode = self.state.study().spec.get("mode", "min")  # type: ignore[union-attr]
        if self.follow_mode == "trial" and self.table.selected_id() is not None:
            tid = self.table.selected_id()
            key: tuple[Any, ...] = ("trial", tid, self.state.curves_version, chart.size)
            if key == self._drawn:
                return
            series = curves.get(tid, {})  # type: ignore[arg-type]
            lines = [Line(metric, *series.get(metric, ((), ())), PALETTE[0])]
            if TRAIN_METRIC in series and TRAIN_METRIC != metric:
                lines.append(Line(TRAIN_METRIC, *series[TRAIN_METRIC], PALETTE[2], right=True))
            chart.border_title = f"trial #{tid}: {metric} and {TRAIN_METRIC} (right) · f: best 5"
            chart.border_subtitle = legend([("━", ln.label, ln.color) for ln in lines])
        else:
            best = best_trials(trials, mode)
            key = ("best", tuple(t.id for t in best), self.state.curves_version, chart.size)
            if key == self._drawn:
                return
            lines = [Line(f"#{t.id}", *curves.get(t.id, {}).get(metric, ((), ())), PALETTE[i])
                     for i, t in enumerate(best)]
            chart.border_title = (f"{metric} · best {len(best)} · enter: one trial" if best
                                  else f"{metric} · no results yet")
            chart.border_subtitle = legend([("━", ln.label, ln.color) for ln in lines])
        self._drawn = key
        if not lines:
            chart.draw_message("no results yet")
        else:
            chart.draw_lines(lines)

    @on(TrialTable.RowHighlighted, "#trials")
    def _row_moved(self) -> None:
        trials = self.state.study_trials()
        study = self.state.study()
        if study is not None:
            self._follow(trials, study.spec.get("mode", "min"))
            if self.follow_mode == "trial":
                self._draw_chart(study.spec.get("metric", ""), trials)
        self._show_detail(trials)

    @on(TrialTable.RowSelected, "#trials")
    def _row_chosen(self) -> None:
        self.follow_mode = "trial"
        self.refresh_view()

    def _show_detail(self, trials: Sequence[Trial]) -> None:
        sel = self.table.selected_id()
        t = next((t for t in trials if t.id == sel), None)
        self._show_tail(t)
        if t is None:
            self.set_line("#run-detail", "")
            return
        text = f"#{t.id} {fmt.params_line(t.params, self.table.hp_names)}"
        if t.error:
            self.set_line("#run-detail", Content.assemble(
                (f"#{t.id} {fmt.STATE_WORD[t.state.value]}: ", "bold $error"), (t.error, "$error")))
        else:
            seed = f" · seed {t.seed} · attempt {t.attempt}" if t.attempt else f" · seed {t.seed}"
            self.set_line("#run-detail", Content.assemble(text, (seed, "$foreground-muted")))

    def _show_tail(self, t: Trial | None) -> None:
        """Under a failed trial's error, the last lines its program printed (shown only when
        there are some: Python workloads print nowhere tuneplay reads)."""
        tail = self._tail_of(t) if t is not None and t.state == TrialState.FAILED else ()
        if self.has_class("-short"):
            tail = tail[-SHORT_TAIL_LINES:]  # the end says why; the table keeps its rows
        key = (t.id if t else None, tail)
        if key == self._tail_shown:
            return  # unchanged: no layout pass on every poll
        self._tail_shown = key
        widget = self.query_one("#run-tail", Static)
        widget.display = bool(tail)
        if tail and t is not None:
            widget.border_title = f"#{t.id} output.log · last {fmt.plural(len(tail), 'line')}"
            widget.update(Content("\n".join(tail)))

    def _tail_of(self, t: Trial) -> tuple[str, ...]:
        """The cached tail of this attempt, or () while it is read in a worker."""
        key = (t.id, t.attempt)
        if key not in self._tails:
            self._tails[key] = ()  # asked once: a failed read is not retried every poll
            self.engine_call("read output", lambda: self.facade.output_tail(t.id, TAIL_LINES),
                             lambda lines: self._got_tail(key, lines))
        return self._tails[key]

    def _got_tail(self, key: tuple[int, int], lines: Sequence[str]) -> None:
        self._tails[key] = tuple(lines)
        self._show_detail(self.state.study_trials())

    # ------------------------------------------------------------- actions
    def select_trial(self, trial_id: int) -> None:
        """Put the cursor on a trial and draw its curves (used from the analysis screen)."""
        self.table.filter = "all"
        self.refresh_view()
        if self.table.select_trial(trial_id):
            self.follow_mode = "trial"
            self.refresh_view()

    def _control(self, verb: str, fn_name: str) -> None:
        if self.require_study() is None:
            return
        ids = self.table.targets()
        if not ids:
            self.notify(f"No trial to {verb}: the list is empty (/ changes the filter).",
                        severity="warning")
            return

        def run() -> None:
            fn = getattr(self.facade, fn_name)
            self.engine_call(verb, lambda: fn(ids), lambda n: self._controlled(verb, ids, n))

        if len(ids) > 1:
            self.app.push_screen(ConfirmScreen(f"{verb.capitalize()} {len(ids)} trials?",
                                               ", ".join(f"#{i}" for i in ids)),
                                 lambda yes: run() if yes else None)
        else:
            run()

    def _controlled(self, verb: str, ids: list[int], n: int) -> None:
        if n:
            self.notify(f"{verb}: {fmt.plural(n, 'trial')} ({', '.join(f'#{i}' for i in ids)})")
        else:
            self.notify(f"{verb}: nothing to do for {', '.join(f'#{i}' for i in ids)} "
                        "in its current state", severity="warning")
        self.table.marked.clear()

    def action_cancel(self) -> None:
        self._control("cancel", "cancel")

    def action_pause(self) -> None:
        self._control("pause", "pause")

    def action_requeue(self) -> None:
        self._control("requeue", "requeue")

    def action_mark(self) -> None:
        if self.require_study() is None:
            return
        sel = self.table.selected_id()
        if sel is None:
            self.notify("No trial to mark: the list is empty.", severity="warning")
            return
        self.table.toggle_mark(sel, self.state.study_trials())
        self.table.action_cursor(1)

    def action_filter(self) -> None:
        if self.require_study() is None:
            return
        names = list(FILTERS)
        self.table.filter = names[(names.index(self.table.filter) + 1) % len(names)]
        self.refresh_view()

    def action_follow(self) -> None:
        if self.require_study() is None:
            return
        if self.follow_mode == "best" and self.table.selected_id() is None:
            self.notify("No trial selected: the chart keeps the best 5.", severity="warning")
            return
        self.follow_mode = "best" if self.follow_mode == "trial" else "trial"
        self.refresh_view()

    def action_chart(self) -> None:
        """Swap the table for the chart (full body) and back: a short, narrow terminal has
        no room for both at a readable size."""
        if self.require_study() is None:
            return
        self.toggle_class("-chart-only")
        self.refresh_view()

    def action_add_trials(self) -> None:
        sid = self.require_study()
        if sid is None:
            return
        per = max(1, len([1 for _ in self.state.study().spec.get("scientific", ())]))  # type: ignore[union-attr]
        hint = ("Search points to add (each point is tried once per scientific value, "
                "continuing the quasi-random sequence)." if per else "")
        self.app.push_screen(PromptScreen("Add trials", hint, "4"),
                             lambda text: self._add(sid, text))

    def _add(self, sid: int, text: str | None) -> None:
        if text is None:
            return
        try:
            n = int(text)
            if n < 1:
                raise ValueError
        except ValueError:
            self.notify(f"add trials: {text!r} is not a positive whole number", severity="error")
            return
        self.engine_call("add trials", lambda: self.facade.add_trials(sid, n),
                         lambda k: self.notify(f"queued {fmt.plural(k, 'new trial')}"))

    def action_slots(self) -> None:
        fields = [("per_gpu", "slots per GPU", "1"), ("cpu", "CPU slots (no GPU)", "")]
        self.app.push_screen(FormScreen("Device slots", fields,
                                        "Several trials per GPU help small models; the engine "
                                        "applies it to the next trials it starts."), self._slots)

    def _slots(self, answer: dict[str, str] | None) -> None:
        if not answer:
            return
        try:
            per_gpu = int(answer["per_gpu"])
            cpu = int(answer["cpu"]) if answer["cpu"].strip() else None
            if per_gpu < 1 or (cpu is not None and cpu < 1):
                raise ValueError
        except ValueError:
            self.notify("slots: whole numbers of at least 1", severity="error")
            return
        self.engine_call("set slots", lambda: self.facade.set_slots(cpu, per_gpu),
                         lambda _: self.notify(f"slots: {per_gpu} per GPU"))
