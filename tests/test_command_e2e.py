"""An unmodified training script tuned by a study file alone, through the real engine:
real subprocesses, a real workspace, the shipped example script (studies/own-script)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import time

import pandas as pd
import pytest

from engine.runner.daemon import engine_pid
from engine.store.base import TrialState
from tests.conftest import ROOT, Project, wait_until

pytestmark = pytest.mark.slow

SCRIPT_DIR = ROOT / "studies" / "own-script"
PATTERN = (r"^step (?P<step>\d+): train loss (?P<train_loss>[\d.]+), val loss (?P<val_loss>[\d.]+), "
           r"val error (?P<val_error>[\d.]+)")


def study(name: str, steps: int, every: int, budget: int, seed: bool = True) -> str:
    seed_arg = ', "--seed={seed}"' if seed else ""  # without it the script's seed is hard-coded
    return f"""\
[study]
name = "{name}"
metric = "val_loss"
max_train_steps = {steps}
eval_every = {every}
budget = {budget}
[study.workload]
command = [{json.dumps(sys.executable)}, "train.py", "--max_iters={{max_train_steps}}",
           "--eval_interval={{eval_every}}", "--out_dir={{checkpoint_dir}}"{seed_arg}]
cwd = {json.dumps(str(SCRIPT_DIR))}
bools = "flag"
resume = ["--resume"]
stdout = [{json.dumps(PATTERN)}]
[fixed]
layernorm = true
width = 32
[nuisance]
learning_rate = {{ low = 1e-3, high = 3e-2, scale = "log" }}
"""


def attempts(project: Project, trial_id: int) -> list[list[str]]:
    """The argv of each attempt, from the trial's output.log."""
    text = (project.workspace / "checkpoints" / str(trial_id) / "output.log").read_text()
    return [json.loads(ln.split(": ", 1)[1].rsplit(" in /", 1)[0]) for ln in text.splitlines()
            if ln.startswith("--- attempt ")]


def test_an_argparse_script_is_tuned_by_its_study_file_alone(project: Project) -> None:
    path = project.write("s.toml", study("script", steps=120, every=40, budget=4))
    done = project.tuneplay("run", str(path), "--wait", "--cpu-slots", "2", check=True)
    assert "4 of 4 trials completed" in done.stdout
    store = project.store()
    trials = store.list_trials()
    assert all(t.state == TrialState.COMPLETED for t in trials), [t.error for t in trials]
    curves = pd.read_csv(io.StringIO(project.tuneplay("export", "script", "--curves", check=True).stdout))
    for t in trials:  # curves come from what the script printed
        mine = curves[curves["trial_id"] == t.id]
        assert set(mine["metric"]) == {"train_loss", "val_loss", "val_error"}
        assert sorted(set(mine["step"])) == [0, 40, 80, 119]
        assert t.best_value < 2.3  # chance is ln 10 = 2.30
    # each trial wrote the script's fixed file name in its own folder, and the weights differ
    digests = set()
    for t in trials:
        argv = attempts(project, t.id)[0]
        assert "--layernorm" in argv and not any(a.startswith("--layernorm=") for a in argv)
        assert f"--out_dir={project.workspace / 'checkpoints' / str(t.id) / 'out'}" in argv
        saved = project.workspace / "checkpoints" / str(t.id) / "out" / "ckpt.pt"
        digests.add(hashlib.sha256(saved.read_bytes()).hexdigest())
    assert len(digests) == 4


def test_engine_stop_and_start_resume_the_script_from_its_own_checkpoint(project: Project) -> None:
    path = project.write("r.toml", study("resuming", steps=30000, every=500, budget=1))
    project.tuneplay("run", str(path), "--cpu-slots", "1", check=True)
    store = project.store()
    wait_until(lambda: any(t.steps_done >= 1000 for t in store.list_trials(states=[TrialState.RUNNING])), timeout=180)
    project.tuneplay("engine", "stop", check=True)
    (trial,) = store.list_trials()
    assert trial.state == TrialState.PAUSED
    before = {r.step for r in store.read_metrics([trial.id], names=["val_loss"])}
    project.tuneplay("engine", "start", "--cpu-slots", "1", check=True)
    wait_until(lambda: store.get_trial(trial.id).state.is_finished(), timeout=300)
    trial = store.get_trial(trial.id)
    assert trial.state == TrialState.COMPLETED and trial.attempt == 2, trial.error
    first, second = attempts(project, trial.id)
    assert "--resume" not in first and second[-1] == "--resume"
    log = (project.workspace / "checkpoints" / str(trial.id) / "output.log").read_text()
    resumed_at = int(log.split("resuming from iteration ")[1].split()[0])
    assert resumed_at > 0 and resumed_at - 1 in before  # the script's own checkpoint, not step 0
    steps = sorted(r.step for r in store.read_metrics([trial.id], names=["val_loss"]))
    assert steps == sorted(set(range(0, 30000, 500)) | {29999})  # no gap, no step twice


def test_a_script_that_ignores_its_seed_is_never_adopted(project: Project) -> None:
    path = project.write("n.toml", study("noseed", steps=60, every=20, budget=2, seed=False))
    project.tuneplay("run", str(path), "--wait", "--cpu-slots", "2", check=True)
    project.tuneplay("rerun", "noseed", "--best", "1", "--seeds", "3", check=True)
    store = project.store()
    wait_until(lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=240)
    reruns = [t for t in store.list_trials() if t.kind != "search"]
    assert len(reruns) >= 3 and all(t.state == TrialState.COMPLETED for t in reruns)
    decide = project.tuneplay("decide", "noseed", "--format", "json")
    verdict = json.loads(decide.stdout)
    assert verdict["verdict"] != "adopt"
    text = project.tuneplay("decide", "noseed").stdout
    assert "ignores its seed" in text and "{seed}" in text


TOY = '''
import json, os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
with open(os.path.join(args["--out"], "argv.json"), "w") as fh:
    json.dump(sys.argv[1:], fh)
mode = args.get("--mode")
if mode == "crash":
    print("step 0 val_loss 0.9")
    raise ValueError("learning rate too high for this toy")
if mode == "silent":
    print("loss 0.5")
    print("done")
    sys.exit(0)
print("step 0 val_loss 0.9")
print("step 1 val_loss 0.4", end="")  # the last line has no newline
'''

HOSTILE = ["; touch /tmp/tuneplay-pwned #", "$(id)", "a b 'c' \"d\"", "{seed}"]


def test_outcomes_are_honest_and_hostile_values_stay_one_token(project: Project) -> None:
    project.write("toy.py", TOY)
    values = ", ".join(json.dumps(v) for v in ["ok", "silent", "crash", *HOSTILE])
    path = project.write("t.toml", f"""\
[study]
name = "toy"
metric = "val_loss"
max_train_steps = 2
eval_every = 1
budget = 7
[study.workload]
command = [{json.dumps(sys.executable)}, "toy.py", "--out={{checkpoint_dir}}", "--mode={{mode}}"]
args = ""
stdout = ['^step (?P<step>\\d+) val_loss (?P<val_loss>\\S+)']
[scientific]
mode = {{ values = [{values}] }}
""")
    project.tuneplay("run", str(path), "--wait", "--cpu-slots", "2", check=True)
    store = project.store()
    by_mode = {t.params["mode"]: t for t in store.list_trials()}
    ok = by_mode["ok"]
    assert ok.state == TrialState.COMPLETED and ok.best_value == 0.4 and ok.best_step == 1
    silent = by_mode["silent"]
    assert silent.state == TrialState.FAILED
    assert silent.error.startswith("reported no val_loss; last output line: 'done' (log: ")
    assert silent.error.endswith(f"checkpoints/{silent.id}/output.log)")
    crash = by_mode["crash"]
    assert crash.state == TrialState.FAILED
    assert crash.error.startswith("exited with code 1: ValueError: learning rate too high for this toy")
    for value in HOSTILE:
        t = by_mode[value]
        seen = json.loads((project.workspace / "checkpoints" / str(t.id) / "out" / "argv.json").read_text())
        assert seen == [f"--out={project.workspace / 'checkpoints' / str(t.id) / 'out'}", f"--mode={value}"]
        assert t.state == TrialState.COMPLETED


SLOW = '''
import os, sys, time
out = sys.argv[1].split("=", 1)[1]
with open(os.path.join(out, f"pid.{os.getpid()}"), "w") as fh:
    fh.write(str(os.getpid()))
for step in range(400):  # quiet after step 4: a dead reader's pipe does not stop it
    if step < 5 or step == 399:
        print(f"step {step} val_loss {1.0 / (step + 1)}")
    time.sleep(0.05)
'''


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_engine_leaves_no_second_copy_of_a_trials_program(project: Project) -> None:
    project.write("slow.py", SLOW)
    path = project.write("o.toml", f"""\
[study]
name = "orphan"
metric = "val_loss"
max_train_steps = 400
eval_every = 1
budget = 1
[study.workload]
command = [{json.dumps(sys.executable)}, "slow.py", "--out={{checkpoint_dir}}"]
stdout = ['^step (?P<step>\\d+) val_loss (?P<val_loss>\\S+)']
""")
    project.tuneplay("run", str(path), "--cpu-slots", "1", check=True)
    store = project.store()
    wait_until(lambda: any(t.steps_done >= 5 for t in store.list_trials(states=[TrialState.RUNNING])), timeout=120)
    out = project.workspace / "checkpoints" / "1" / "out"
    (first,) = [int(p.read_text()) for p in out.glob("pid.*")]
    pid = engine_pid(project.workspace)
    assert pid and pid > 0
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    assert _alive(first)  # its own session: the worker's death does not reach it
    project.tuneplay("engine", "start", "--cpu-slots", "1", check=True)
    wait_until(lambda: len(list(out.glob("pid.*"))) == 2, timeout=60)  # the second attempt runs
    assert not _alive(first)  # and the first one's program was ended before it started
    wait_until(lambda: store.get_trial(1).state.is_finished(), timeout=120)
    trial = store.get_trial(1)
    assert trial.state == TrialState.COMPLETED and trial.attempt == 2, trial.error
