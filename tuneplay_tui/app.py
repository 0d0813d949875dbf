"""The tuneplay app: six screens (home + the playbook's five stages) over one engine facade.

The app owns the state, the poller and navigation; everything a screen does lives in its
screen. ``run_app`` is the console entry point (see :mod:`tuneplay_tui.launcher`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from engine.store.base import Trial
from tuneplay_tui.commands import TuneplayCommands
from tuneplay_tui.format import one_line, plural
from tuneplay_tui.messages import EngineCallDone, NoticeRaised, WorkspacePolled, run_engine_call
from tuneplay_tui.notices import PASSING_SECONDS, Notice, NoticeBoard
from tuneplay_tui.poller import Poller
from tuneplay_tui.screens import (
    AnalysisScreen,
    BaselineScreen,
    DecisionScreen,
    DesignScreen,
    HomeScreen,
    RunningScreen,
)
from tuneplay_tui.screens.base import StageScreen
from tuneplay_tui.screens.help import HelpScreen
from tuneplay_tui.state import AppState, finished_count

MAX_TOASTS = 3  # trial failures announced one by one per poll; more are summed up


class TuneplayApp(App[str]):
    """The terminal app. ``facade`` is any :class:`engine.facade.EngineFacade`."""

    CSS_PATH = "app.tcss"
    TITLE = "tuneplay"
    COMMANDS = App.COMMANDS | {TuneplayCommands}
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "home": HomeScreen, "baseline": BaselineScreen, "design": DesignScreen,
        "running": RunningScreen, "analysis": AnalysisScreen, "decision": DecisionScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "stage('baseline')", "Baseline", show=False),
        Binding("2", "stage('design')", "Design", show=False),
        Binding("3", "stage('running')", "Running", show=False),
        Binding("4", "stage('analysis')", "Analysis", show=False),
        Binding("5", "stage('decision')", "Decision", show=False),
        Binding("h", "stage('home')", "Home", show=False),
        Binding("question_mark,f1", "help", "Help"),
        Binding("escape", "dismiss_notice", "Dismiss error", show=False),
        Binding("q", "quit_app", "Quit", tooltip="Quit the app; the engine keeps running"),
    ]

    def __init__(self, facade: Any, *, study_file: str | None = None,
                 poll_interval: float = 1.0, clock: Callable[[], float] = time.time,
                 start_engine: bool = True, created_workspace: str | None = None) -> None:
        super().__init__()
        self.facade = facade
        self.state = AppState()
        self.poller = Poller(self, facade, poll_interval)
        self.clock = clock
        self.study_file = study_file
        self.start_engine = start_engine
        self.created_workspace = created_workspace  # this run made it: say so, once
        self.pending_experiment: str | None = None
        self.pending_study: str | None = None
        self._trial_states: dict[int, dict[int, str]] = {}
        self._workloads: list[Any] | None = None
        self.notices = NoticeBoard()

    @property
    def project_dir(self) -> Path:
        """The folder holding the workspace (``studies/`` lives here)."""
        return Path(self.facade.workspace).parent

    def show_path(self, path: str | Path) -> str:
        """A path as the user thinks of it: relative to the project when inside it."""
        try:
            return str(Path(path).relative_to(self.project_dir))
        except ValueError:
            return str(path)

    def on_mount(self) -> None:
        # Everything alive now (Textual, the engine's modules, pandas, numpy) lives as long
        # as the app: keep it out of the collector's full passes, which otherwise stall a
        # frame every few seconds while hundreds of trials stream in.
        gc.freeze()
        self.switch_mode("home")
        if self.start_engine:
            self.engine_call("start the engine", self.facade.start_engine)
        if self.created_workspace:
            self.notify(f"created the workspace {self.show_path(self.created_workspace)}; its engine "
                        "trains in the background and keeps going after you quit "
                        "(`tuneplay engine stop` stops it)", title="workspace", timeout=12)
        self.poller.start()
        if self.study_file:
            self.open_study_file(self.study_file)

    # ------------------------------------------------------------- polling
    def on_workspace_polled(self, message: WorkspacePolled) -> None:
        if message.error is not None or message.snapshot is None:
            if self.state.error != message.error:
                self.notify(f"cannot read the workspace: {message.error}", title="engine",
                            severity="error")
            self.state.error = message.error or "no snapshot"
            self.refresh_screen()
            return
        if self.state.error is not None:
            self.notify("the workspace is readable again", title="engine")
        self.state.apply_snapshot(message.snapshot)
        self._resolve_pending()
        if message.study_id is not None and message.trials is not None:
            self._announce(message.study_id, message.trials)
            self.state.trials[message.study_id] = list(message.trials)
            if message.study_id == self.state.study_id:
                self.state.curves, self.state.curves_version = message.curves, message.curves_version
        self.state.apply_devices(message.devices)
        self.poller.follow(self.state.study_id)
        self.refresh_screen()

    def _resolve_pending(self) -> None:
        snap = self.state.snapshot
        for exp in snap.experiments if snap else ():
            if exp.experiment.name == self.pending_experiment:
                self.pending_experiment = None
                self.state.select_experiment(exp.experiment.id)
            for s in exp.studies:
                if s.study.name == self.pending_study:
                    self.pending_study = None
                    self.state.select_study(s.study.id)

    def _announce(self, study_id: int, trials: Sequence[Trial]) -> None:
        """Toast trials that failed or diverged since the last poll (never on first sight)."""
        before = self._trial_states.get(study_id)
        self._trial_states[study_id] = {t.id: t.state.value for t in trials}
        if before is None:
            return
        broke = [t for t in trials if t.state.is_infeasible()
                 and before.get(t.id) not in (None, t.state.value)]
        for t in broke[:MAX_TOASTS]:
            word = "failed" if t.state.value == "FAILED" else "diverged"
            self.notify(f"#{t.id} {word} at step {t.steps_done}: {t.error or 'no error text'}",
                        title=f"trial {word}", severity="error" if word == "failed" else "warning")
        if len(broke) > MAX_TOASTS:
            self.notify(f"and {len(broke) - MAX_TOASTS} more trials failed or diverged",
                        severity="warning")

    def refresh_screen(self) -> None:
        """Redraw the visible stage screen (the one under a dialog, too)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, StageScreen):
                screen.refresh_view()
                return

    # ------------------------------------------------------------- navigation
    def action_stage(self, stage: str) -> None:
        if isinstance(self.screen, ModalScreen):
            return
        if self.current_mode != stage:
            self.switch_mode(stage)

    def run_stage_action(self, stage: str, action: str) -> None:
        """Go to a stage, then run one of its actions (the command palette's way in)."""
        self.action_stage(stage)
        self.call_after_refresh(lambda: self.screen.run_action(action))

    def follow_experiment(self, experiment_id: int) -> None:
        self.state.select_experiment(experiment_id)
        self.poller.follow(self.state.study_id)
        self.refresh_screen()

    def follow_study(self, study_id: int) -> None:
        self.state.select_study(study_id)
        self.poller.follow(study_id)
        self.refresh_screen()

    select_experiment = follow_experiment
    select_study = follow_study

    def follow_new_study(self, study: Any) -> None:
        """A study was just launched: follow it on the running screen as soon as it shows."""
        self.pending_study = study.name
        self.state.select_study(study.id)
        self.poller.follow(study.id)
        self.action_stage("running")

    def show_trial(self, trial_id: int) -> None:
        """Open a trial on the running screen (from a finding's trial list)."""
        self.action_stage("running")

        def select() -> None:
            if isinstance(self.screen, RunningScreen):
                self.screen.select_trial(trial_id)

        self.call_after_refresh(select)

    def open_study_file(self, path: str) -> None:
        """Open a study file: follow it if it was launched before, else review it in Design."""
        def read() -> tuple[str, Any]:
            text = Path(path).read_text(encoding="utf-8")
            return text, self.facade.validate_study_text(text, path)

        self.engine_call(f"open {path}", read, lambda r: self._opened(path, *r))

    def _opened(self, path: str, text: str, spec: Any) -> None:
        snap = self.state.snapshot
        for exp in snap.experiments if snap else ():
            for s in exp.studies:
                if s.study.name == spec.name:
                    self.follow_study(s.study.id)
                    done = s.total and finished_count(s.counts) >= s.total
                    self.action_stage("analysis" if done else "running")
                    return
        # the experiment it launches into, as `tuneplay run` picks it: by its experiment key
        # (named after its workload when unset), never whichever experiment was selected
        exp = self.find_experiment(spec.experiment)
        if exp is not None and exp.experiment.workload == spec.workload_ref:
            self.follow_experiment(exp.experiment.id)
        elif exp is not None:
            self.notify(f"experiment {exp.experiment.name!r} runs {exp.experiment.workload}, "
                        f"not {spec.workload_ref}: set [study] experiment to another name "
                        "before launching", title=self.show_path(path), severity="error")
        self.action_stage("design")

        def load() -> None:
            if isinstance(self.screen, DesignScreen):
                self.screen.load_text(text, path)

        self.call_after_refresh(load)

    def open_draft(self, text: str, path: str) -> None:
        """Review a drafted study (Analysis's next round) in Design, as an opened file is
        reviewed; nothing is written until it is saved (w) or launched (L) there."""
        self.action_stage("design")

        def load() -> None:
            screen = self.screen
            if isinstance(screen, DesignScreen):  # (a starting design on its way is dropped)
                screen.load_text(text, path)
                screen.opened_toml = None  # not on disk yet: launching saves it first

        self.call_after_refresh(load)

    def workload_info(self, ref: str | None = None) -> Any:
        """A built-in workload's metadata: ``ref``'s, else the selected experiment's (None
        for other workloads, whose hyperparameters the app does not know)."""
        if ref is None:
            exp = self.state.experiment()
            if exp is None:
                return None
            ref = exp.experiment.workload
        if self._workloads is None:
            try:
                self._workloads = list(self.facade.workloads())
            except Exception:  # noqa: BLE001 (an error boundary)
                self._workloads = []
        return next((w for w in self._workloads if w.ref == ref), None)

    def find_experiment(self, name: str) -> Any:
        """The experiment (summary) of this name in the latest snapshot, or None."""
        snap = self.state.snapshot
        return next((e for e in snap.experiments if e.experiment.name == name), None) \
            if snap else None

    # ------------------------------------------------------------- notices
    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Raise a notice (thread-safe): errors stay until dismissed (esc), others pass.
        Shown in the notice bar, never as a toast over the screen; never markup (engine
        messages hold brackets: ``[study]``)."""
        passing = min(timeout or PASSING_SECONDS, PASSING_SECONDS * 2)
        self.post_message(NoticeRaised(Notice(str(message), title, str(severity),
                                              time.monotonic(), passing)))

    def on_notice_raised(self, message: NoticeRaised) -> None:
        self.notices.add(message.notice)
        self.show_notices()

    def show_notices(self) -> None:
        """Redraw the notice bar of the visible stage screen; wake up when one expires."""
        now = time.monotonic()
        for screen in reversed(self.screen_stack):
            if isinstance(screen, StageScreen):
                screen.show_notices(self.notices.errors, self.notices.passing(now))
                break
        wait = self.notices.next_expiry(now)
        if wait is not None:
            self.set_timer(wait + 0.05, self.show_notices, name="notice expiry")

    def action_dismiss_notice(self) -> None:
        if self.notices.dismiss() is not None:
            self.show_notices()

    # ------------------------------------------------------------- help, errors, quit
    def action_help(self) -> None:
        if not isinstance(self.screen, ModalScreen):
            self.push_screen(HelpScreen(self.screen))

    def engine_call(self, label: str, fn: Callable[[], Any],
                    on_done: Callable[[Any], None] | None = None) -> None:
        """As :meth:`StageScreen.engine_call`, for app-level work."""
        run_engine_call(self, label, fn, on_done)

    def on_engine_call_done(self, message: EngineCallDone) -> None:
        if message.error is not None:
            self.notify(message.error, title=f"{message.label} failed", severity="error")
        elif message.on_done is not None:
            message.on_done(message.result)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place an unexpected worker error surfaces: a notification."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(one_line(event.worker.error), title=f"{event.worker.name} failed",
                        severity="error")

    def quit_message(self) -> str:
        """What the shell shows after quitting: the engine and its trials keep going."""
        snap = self.state.snapshot
        n = self.state.active_trials()
        if snap is not None and not snap.engine_running:
            return (f"tuneplay: the engine is not running; {plural(n, 'trial')} wait in the "
                    "queue (`tuneplay` starts it again).")
        return (f"tuneplay: the engine keeps running {plural(n, 'trial')} in the background "
                "(`tuneplay engine stop` to stop it).")

    def action_quit_app(self) -> None:
        self.exit(self.quit_message())


def parse_args(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tuneplay", description="Open the tuneplay app.")
    parser.add_argument("--workspace", metavar="DIR", help="workspace folder (default: "
                        "$TUNEPLAY_WORKSPACE or ./.tuneplay)")
    parser.add_argument("--store", metavar="URL", help="a shared store (postgresql://...; default "
                        "$TUNEPLAY_STORE, else the workspace's SQLite)")
    parser.add_argument("--checkpoints", metavar="DIR", help="with --store: the shared folder "
                        "(default $TUNEPLAY_CHECKPOINTS)")
    parser.add_argument("file", nargs="?", metavar="FILE", help="a study file to open")
    return parser.parse_args(list(args))


def run_app(args: list[str]) -> int:
    """Open the app on a workspace (the ``tuneplay [--workspace DIR] [FILE]`` command)."""
    opts = parse_args(args)
    from engine.cli import UserError, resolve_store
    from engine.store import workspace_path

    try:
        resolve_store(opts)  # a shared store: the workspace is the shared folder
    except UserError as exc:
        print(f"tuneplay: {exc}", file=sys.stderr)
        return 2
    try:
        from engine.facade_local import LocalFacade

        path = workspace_path(opts.workspace)
        created = not path.exists() and not opts.store
        facade = LocalFacade(path, opts.store)
    except Exception as exc:  # noqa: BLE001 (an error boundary)
        print(f"tuneplay: cannot open the workspace: {one_line(exc)}", file=sys.stderr)
        return 2
    app = TuneplayApp(facade, study_file=opts.file, created_workspace=str(path) if created else None)
    app.run()
    if created:  # said once, on the terminal, where it stays readable after the app closes
        print(f"tuneplay: created the workspace {path}; its engine runs in the background and "
              "keeps training after you quit (`tuneplay engine stop` stops it)")
    print(app.return_value or app.quit_message())
    return 0
