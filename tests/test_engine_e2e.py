"""The engine as a user runs it: real workers, a real workspace, real training on the CPU."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from engine.runner.daemon import engine_pid
from engine.store.base import Trial, TrialState
from tests.conftest import Project, wait_until

pytestmark = pytest.mark.slow

DIGITS = """\
[study]
name = "{name}"
workload = "builtin:digits-mlp"
max_train_steps = {steps}
eval_every = {every}
budget = {budget}
fuse = {fuse}
seed = 0
[fixed]
optimizer = "adam"
[nuisance]
learning_rate = {{ low = 1e-3, high = 3e-2, scale = "log" }}
"""


def test_run_wait_finishes_every_trial_better_than_chance(project: Project) -> None:
    study = project.write("s.toml", DIGITS.format(name="quick", steps=200, every=25, budget=8, fuse='"auto"'))
    proc = project.tuneplay("run", str(study), "--wait", "--cpu-slots", "2", check=True)
    assert "study 'quick' finished: 8 of 8 trials completed" in proc.stdout
    trials = pd.read_csv(io.StringIO(project.tuneplay("export", "quick", check=True).stdout))
    assert (trials["state"] == "COMPLETED").all() and len(trials) == 8
    assert trials["best_value"].min() < 0.2  # chance is 0.9
    assert (trials["steps_done"] == 200).all()
    curves = pd.read_csv(io.StringIO(project.tuneplay("export", "quick", "--curves", check=True).stdout))
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    assert set(curves["metric"]) == {"train_loss", "val_loss", "val_error"}
    # running the same file again continues the study without duplicating a trial
    again = project.tuneplay("run", str(study), check=True)
    assert "0 trials enqueued" in again.stdout
    # and checkpoint files are the owner's alone, in the folder of the attempt that wrote them
    best = project.workspace / "checkpoints" / str(int(trials["id"][0])) / "a1" / "best.pt"
    assert best.exists() and (best.stat().st_mode & 0o077) == 0


def _worker_pids(project: Project) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"engine.runner.worker --workspace {project.workspace}"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("fuse, running", [('"off"', 2), ("4", 4)], ids=["single", "fused-group"])
def test_kill_9_engine_then_restart_resumes_from_checkpoints(project: Project, fuse: str, running: int) -> None:
    study = project.write("long.toml", DIGITS.format(name="long", steps=2500, every=50, budget=4, fuse=fuse))
    project.tuneplay("run", str(study), "--cpu-slots", "2", check=True)
    store = project.store()
    n_running = running

    def two_running_with_checkpoints() -> bool:
        running = store.list_trials(states=[TrialState.RUNNING])
        return len(running) == n_running and all(
            any(c.kind == "latest" and c.step >= 100 for c in store.get_checkpoints(t.id)) for t in running
        )

    wait_until(two_running_with_checkpoints, timeout=120, poll=0.05)
    interrupted = [t.id for t in store.list_trials(states=[TrialState.RUNNING])]
    pid = engine_pid(project.workspace)
    assert pid and pid > 0
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _worker_pids(project), timeout=20)  # workers die with their engine
    assert project.tuneplay("engine", "status").returncode != 0
    project.tuneplay("engine", "start", "--cpu-slots", "2", check=True)
    wait_until(lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=240, poll=0.5)
    trials = store.list_trials()
    assert all(t.state == TrialState.COMPLETED for t in trials), [(t.id, t.state, t.error) for t in trials]
    logs = "".join(p.read_text() for p in (project.workspace / "logs").glob("worker-*.log"))
    for tid in interrupted:
        assert store.get_trial(tid).attempt == 2
        line = next(ln for ln in logs.splitlines() if f"trial {tid} resumes at step" in ln)
        assert int(line.split("resumes at step ")[1].split()[0]) > 0, line
    assert "Traceback" not in logs
    _only_recorded_files_left_from_first_attempts(project, trials)
    curves = pd.read_csv(io.StringIO(project.tuneplay("export", "long", "--curves", check=True).stdout))
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    expected_steps = set(range(0, 2500, 50)) | {2499}
    for tid, group in curves[curves["metric"] == "val_error"].groupby("trial_id"):
        assert set(group["step"]) == expected_steps, tid


FAULTY = '''
import os, signal

HYPERPARAMETERS = {"behaviour": "ok"}

def train(hp, trial):
    for step in range(trial.max_train_steps):
        if hp["behaviour"] == "raise" and step == 3:
            raise ValueError("boom at step 3")
        if hp["behaviour"] == "signal" and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        if hp["behaviour"] == "signal_once" and step == 3 and not os.path.exists("killed-once"):
            open("killed-once", "w").close()  # an OOM kill, say: the next attempt gets through
            os.kill(os.getpid(), signal.SIGKILL)
        loss = float("nan") if hp["behaviour"] == "diverge" and step >= 4 else 1.0 / (step + 1)
        trial.report(step, train_loss=loss, val_error=loss)
        trial.checkpoint(step)
        if trial.should_stop():
            return
'''


def test_raising_diverging_and_killed_workloads_are_recorded_and_others_finish(project: Project) -> None:
    project.write("faulty.py", FAULTY)
    study = project.write("f.toml", """\
[study]
name = "faulty"
workload = "faulty:train"
max_train_steps = 10
eval_every = 1
budget = 7
[scientific]
behaviour = { values = ["ok", "raise", "diverge", "signal", "signal_once", "ok2", "ok3"] }
""")
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "2", check=True)
    by = {t.params["behaviour"]: t for t in project.store().list_trials()}
    assert by["raise"].state == TrialState.FAILED and "ValueError: boom at step 3" in by["raise"].error
    assert by["diverge"].state == TrialState.DIVERGED and "step 4" in by["diverge"].error
    assert by["signal"].state == TrialState.FAILED and by["signal"].attempt == 3
    assert by["signal"].error == "worker killed by SIGKILL during the trial, on each of its 3 attempts"
    assert by["signal_once"].state == TrialState.COMPLETED and by["signal_once"].attempt == 2
    for ok in ("ok", "ok2", "ok3"):
        assert by[ok].state == TrialState.COMPLETED and by[ok].best_value == pytest.approx(0.1)
    assert project.tuneplay("engine", "status").returncode == 0  # the engine survived all of it


ECHO = '''
import json, os, sys
with open(os.path.join(os.environ["TUNEPLAY_CHECKPOINT_DIR"], "argv.json"), "w") as fh:
    json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("TUNEPLAY_")}}, fh)
with open(os.environ["TUNEPLAY_METRICS"], "a") as fh:
    fh.write(json.dumps({"step": 0, "val_error": 0.5}) + "\\n")
    fh.write(json.dumps({"step": 1, "val_error": 0.25}) + "\\n")
'''

HOSTILE = ["; touch /tmp/tuneplay-pwned #", "$(id)", "--help", "line\nbreak", "`id`", "a b 'c' \"d\""]


def test_command_workload_gets_hostile_values_as_single_argv_tokens(project: Project) -> None:
    if os.path.exists("/tmp/tuneplay-pwned"):
        os.remove("/tmp/tuneplay-pwned")
    project.write("echo_args.py", ECHO)
    values = ", ".join(json.dumps(v) for v in HOSTILE)
    study = project.write("c.toml", f"""\
[study]
name = "hostile"
workload = {{ command = [{json.dumps(sys.executable)}, "echo_args.py"] }}
max_train_steps = 2
eval_every = 1
budget = {len(HOSTILE)}
[scientific]
note = {{ values = [{values}] }}
""")
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "2", check=True)
    store = project.store()
    for t in store.list_trials():
        assert t.state == TrialState.COMPLETED, t.error
        assert t.best_value == 0.25 and t.best_step == 1
        seen = json.loads((project.workspace / "checkpoints" / str(t.id) / "out" / "argv.json").read_text())
        assert seen["argv"] == [f"--note={t.params['note']}"]
        assert seen["env"]["TUNEPLAY_TRIAL_ID"] == str(t.id)
        assert seen["env"]["TUNEPLAY_SEED"] == str(t.seed)
        assert seen["env"]["TUNEPLAY_MAX_TRAIN_STEPS"] == "2"
        assert seen["env"]["TUNEPLAY_EVAL_EVERY"] == "1"
    assert sorted(t.params["note"] for t in store.list_trials()) == sorted(HOSTILE)
    assert not os.path.exists("/tmp/tuneplay-pwned")


def test_engine_stop_pauses_and_next_start_resumes(project: Project) -> None:
    # Every wait is on the trials' own progress (states, steps, checkpoints), never on how
    # long a trial should take: a busy machine only makes it slower. 8000 steps keep both
    # trials training while `engine stop` starts up, however slow that is.
    from tests.progress_wait import wait_while_progressing

    study = project.write("p.toml", DIGITS.format(name="pausing", steps=8000, every=100, budget=2, fuse='"off"'))
    project.tuneplay("run", str(study), "--cpu-slots", "2", check=True)
    store = project.store()

    def progress() -> tuple[tuple[str, int, int], ...]:
        return tuple((t.state.value, t.attempt, t.steps_done) for t in store.list_trials())

    def both_running_with_a_checkpoint() -> bool:
        running = store.list_trials(states=[TrialState.RUNNING])
        return len(running) == 2 and all(
            any(c.kind == "latest" for c in store.get_checkpoints(t.id)) for t in running)

    wait_while_progressing(both_running_with_a_checkpoint, progress)
    stop = project.tuneplay("engine", "stop", check=True)
    assert "paused" in stop.stdout
    paused = store.list_trials()
    assert {t.state for t in paused} == {TrialState.PAUSED}, [(t.id, t.state, t.steps_done) for t in paused]
    assert project.tuneplay("engine", "status").returncode == 1
    project.tuneplay("engine", "start", "--cpu-slots", "2", check=True)
    wait_while_progressing(lambda: all(t.state.is_finished() for t in store.list_trials()), progress)
    trials = store.list_trials()
    assert all(t.state == TrialState.COMPLETED for t in trials), [(t.id, t.state, t.error) for t in trials]
    assert all(t.attempt == 2 for t in trials)
    logs = "".join(p.read_text() for p in (project.workspace / "logs").glob("worker-*.log"))
    for before in paused:  # each resumed from its checkpoint, not from step 0
        line = next(ln for ln in logs.splitlines() if f"trial {before.id} resumes at step" in ln)
        assert int(line.split("resumes at step ")[1].split()[0]) > 0, line
    assert "Traceback" not in logs
    _only_recorded_files_left_from_first_attempts(project, trials)


def _only_recorded_files_left_from_first_attempts(project: Project, trials: list[Trial]) -> None:
    """Once a resumed trial ends, its first attempt's folder keeps only what the store still
    records (an old best the second attempt did not beat); a superseded latest.pt is gone."""
    store = project.store()
    for t in trials:
        recorded = {Path(c.path).resolve() for c in store.get_checkpoints(t.id)}
        left = {p.resolve() for p in (project.workspace / "checkpoints" / str(t.id) / "a1").glob("*")}
        assert left <= recorded, (t.id, sorted(map(str, left - recorded)))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_engine_outlives_the_terminal_that_started_it(project: Project) -> None:
    study = project.write("t.toml", DIGITS.format(name="detached", steps=300, every=50, budget=6, fuse='"auto"'))
    session = f"tuneplay-test-{os.getpid()}"
    cmd = (f"cd {project.path} && TUNEPLAY_WORKSPACE={project.workspace} PYTHONPATH={project.env['PYTHONPATH']} "
           f"{sys.executable} -m tuneplay_tui.launcher run {study} --cpu-slots 2; sleep 600")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd], check=True)
    try:
        wait_until(lambda: engine_pid(project.workspace) is not None, timeout=60)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    time.sleep(0.5)
    assert project.tuneplay("engine", "status").returncode == 0
    store = project.store()
    wait_until(lambda: len(store.list_trials()) == 6
               and all(t.state == TrialState.COMPLETED for t in store.list_trials()), timeout=180)


USER_FUSED = '''
from engine.workloads.fused import fused_with

HYPERPARAMETERS = {"x": 0.5, "width": 8}


def train_fused(hps, trials):
    for step in range(trials[0].max_train_steps):
        for hp, t in zip(hps, trials):
            t.report(step, val_error=hp["x"] + 1.0 / (step + 1), group=float(len(trials)))


@fused_with(train_fused, group_by=["width"])
def train(hp, trial):
    for step in range(trial.max_train_steps):
        trial.report(step, val_error=hp["x"] + 1.0 / (step + 1), group=1.0)
'''


def test_groups_of_a_fused_user_workload_train_together(project: Project) -> None:
    project.write("userfused.py", USER_FUSED)
    study = project.write("u.toml", """\
[study]
name = "userfused"
workload = "userfused:train"
max_train_steps = 5
eval_every = 1
budget = 8
fuse = 4
[nuisance]
x = { low = 0.0, high = 1.0 }
""")
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "1", check=True)
    store = project.store()
    trials = store.list_trials()
    assert all(t.state == TrialState.COMPLETED for t in trials) and len({t.group_key for t in trials}) == 1
    groups = {r.value for r in store.read_metrics(names=["group"])}
    assert groups == {4.0}


BESIDE = '''
HYPERPARAMETERS = {"x": 0.5}


def train(hp, trial):
    for step in range(trial.max_train_steps):
        trial.report(step, val_error=hp["x"] + 1.0 / (step + 1))
'''


def test_a_python_workload_beside_its_study_file_runs_from_any_folder(project: Project) -> None:
    (project.path / "sub").mkdir()
    project.write("sub/besidetrain.py", BESIDE)
    study = project.write("sub/b.toml", """\
[study]
name = "beside"
workload = "besidetrain:train"
max_train_steps = 3
eval_every = 1
budget = 2
[nuisance]
x = { low = 0.0, high = 1.0 }
""")
    assert project.tuneplay("validate", str(study)).returncode == 0
    project.tuneplay("run", "sub/b.toml", "--wait", "--cpu-slots", "1", check=True)  # from the parent folder
    trials = project.store().list_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 2, [t.error for t in trials]
    assert project.store().find_experiment("besidetrain") is not None


def test_an_experiment_shared_by_two_workloads_is_refused_with_file_line_and_key(project: Project) -> None:
    for module in ("first", "second"):
        project.write(f"{module}.py", BESIDE)
    text = '[study]\nname = "{m}"\nworkload = "{m}:train"\nexperiment = "shared"\nmax_train_steps = 2\nbudget = 1\n'
    project.tuneplay("run", str(project.write("a.toml", text.format(m="first"))), check=True)
    second = project.write("b.toml", text.format(m="second"))
    proc = project.tuneplay("run", str(second))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{second}:4: study.experiment: experiment 'shared' runs first:train, "
                                  "not second:train"), proc.stderr
    assert project.store().find_study("second") is None
