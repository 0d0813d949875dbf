"""The command line and the app's lists off the happy path: a typo'd study file, --help and
--version, a study whose name merely contains "-baseline", a command path with a space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.store.base import Study
from tests.conftest import ROOT, Project
from tuneplay_tui.state import is_baseline_run


def tuneplay(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tuneplay_tui.launcher", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})


def test_a_missing_study_file_is_one_line_and_exit_2_not_the_app(tmp_path: Path) -> None:
    proc = tuneplay("nothere.toml", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "nothere.toml: no such file\n" and proc.stdout == ""
    assert not (tmp_path / ".tuneplay").exists()  # nothing created for a typo


def test_help_says_a_study_file_opens_the_app_and_version_answers(tmp_path: Path) -> None:
    helptext = tuneplay("--help", cwd=tmp_path).stdout
    assert "tuneplay [--workspace DIR | --store URL --checkpoints DIR] [FILE.toml]" in helptext
    assert "With no COMMAND, opens the app" in helptext and "engine stop" in helptext
    version = tuneplay("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("tuneplay ")


def study(name: str, **spec: object) -> Study:
    return Study(1, 1, name, {"budget": 16, **spec}, 0, 0, 0.0)


def test_a_name_never_hides_a_study_only_the_stored_kind_does() -> None:
    assert not is_baseline_run(study("mlp-baseline-lr"))
    assert is_baseline_run(study("mlp-run", kind="baseline"))
    assert is_baseline_run(study("mlp-baseline-v3", budget=1))  # stored before the kind existed


def test_a_command_path_with_a_space_survives_its_baseline_run(project: Project) -> None:
    from engine.facade_local import LocalFacade

    folder = project.path / "my scripts"
    folder.mkdir()
    (folder / "t.py").write_text("")
    text = (f'[study]\nname = "spaced"\nmax_train_steps = 5\nbudget = 1\n[study.workload]\n'
            f'command = [{json.dumps(sys.executable)}, {json.dumps(str(folder / "t.py"))}]\n')
    facade = LocalFacade(project.workspace)
    facade.start_engine = lambda *a, **k: None  # type: ignore[method-assign]  (no training here)
    launched = facade.launch_file(str(project.write("s.toml", text)))
    exp = facade.store.get_experiment(launched.experiment_id)
    baseline = facade.run_baseline(exp.id)
    assert baseline.spec["workload"]["command"] == [sys.executable, str(folder / "t.py")]
    assert baseline.spec["kind"] == "baseline"


def test_the_header_says_when_a_running_engine_is_paused_by_a_full_disk() -> None:
    from engine.facade import Snapshot
    from tuneplay_tui.state import AppState

    state = AppState()
    state.snapshot = Snapshot("/ws", True, 42, ("cpu.0",), ())
    assert state.engine_line() == ("engine ● CPU · 1 slots", "ok")
    state.snapshot = Snapshot("/ws", True, 42, ("cpu.0",), (), engine_note="disk full: 3 MiB free on /ws")
    assert state.engine_line() == ("engine ‖ paused: disk full: 3 MiB free on /ws", "error")


def test_a_bayesian_study_is_not_done_before_its_budget_is_reached(tmp_path: Path) -> None:
    from engine.spec import load_study
    from engine.status import study_progress
    from engine.store import open_store
    from engine.store.base import TrialProgress, TrialState
    from engine.workspace import launch_study

    store = open_store(tmp_path / ".tuneplay")
    launch = launch_study(store, load_study(ROOT / "studies" / "digits-mlp-bayes.toml"))
    first = store.claim_trials("w", "cpu", limit=len(launch.new_trials))
    for t in first:  # the first batch finishes before the engine asks for the next one
        store.finish_trial(t.id, TrialProgress(TrialState.COMPLETED, 299, 0.1, 300, 1.0))
    progress = study_progress(store, launch.study.id)
    assert not progress.finished and f"{len(first)}/20 done" in progress.line()
