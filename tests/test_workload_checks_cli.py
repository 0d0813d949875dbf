"""What a user sees of an unmodified script's habits, through the CLI: seed reruns that never
vary (``decide`` refuses, the report warns), steps past ``max_train_steps`` (flagged once
per study), failures with their output tails (``status`` and the report), and an export
whose columns never repeat a name. The workspace is written through the store (no training),
so each outcome is exactly the one under test."""

from __future__ import annotations

import io
import json

import pandas as pd

from engine.decisions import plan_reruns
from engine.spec import load_study
from engine.store.base import NewTrial, TrialProgress, TrialState
from engine.workspace import launch_study
from tests.conftest import Project

STUDY = r"""
[study]
name = "script"
metric = "val_loss"
max_train_steps = 200
eval_every = 50
budget = 8
[study.workload]
command = ["python", "train.py", "--out_dir={checkpoint_dir}"]
stdout = ['^step (?P<step>\d+): val loss (?P<val_loss>[\d.]+)']
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
"""
TRACEBACK = ["step 0: val loss 2.1", "Traceback (most recent call last):",
             '  File "train.py", line 40, in <module>', "    raise ValueError('bad lr')",
             "ValueError: bad lr"]


def finish(store, trial_id: int, state: TrialState, value: float | None = None,  # type: ignore[no-untyped-def]
           steps: int = 200, error: str = "") -> None:
    store.finish_trial(trial_id, TrialProgress(state, steps - 1 if value else None, value, steps, 1.0, error))


def script_study(project: Project):  # type: ignore[no-untyped-def]
    """8 search trials: 3 ran to step 200 (one past the budget), 3 within it, 2 failed (one
    with a traceback in its output.log)."""
    project.write("train.py", "print('never run here')\n")
    store = project.store()
    launch = launch_study(store, load_study(project.write("s.toml", STUDY)))
    trials = store.claim_trials("w", "cpu", limit=8)
    for t in trials[:3]:
        finish(store, t.id, TrialState.COMPLETED, 0.5 - 0.01 * t.number, steps=201)
    for t in trials[3:6]:
        finish(store, t.id, TrialState.COMPLETED, 0.6 - 0.01 * t.number)
    crashed, silent = trials[6], trials[7]
    log = project.workspace / "checkpoints" / str(crashed.id) / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(TRACEBACK) + "\n")
    finish(store, crashed.id, TrialState.FAILED, steps=1, error=f"exited with code 1: ValueError: bad lr (log: {log})")
    finish(store, silent.id, TrialState.FAILED, steps=0, error="worker exited with code -9")
    return store, launch.study


def test_decide_refuses_seed_reruns_that_never_vary_and_the_report_says_why(project: Project) -> None:
    store, study = script_study(project)
    plan = plan_reruns(store, study, best_k=1, seeds=3)
    for t in store.claim_trials("w", "cpu", limit=len(plan.trials)):  # a hard-coded seed
        finish(store, t.id, TrialState.COMPLETED, 0.31 if t.kind == "rerun" else 0.35)
    text = project.tuneplay("decide", "script", check=True).stdout
    assert "verdict: INCONCLUSIVE — Refused: all 3 candidate and all 3 baseline seed reruns gave " \
           "exactly the same val_loss (0.31 and 0.35), so the workload ignores its seed" in text
    assert 'put {seed} in its command (e.g. "--seed={seed}")' in text
    assert "test: not run: the candidate and baseline seed reruns are identical" in text
    assert "ADOPT" not in text and "p = 0" not in text
    assert "candidate 0.31 ±0 (n=3)   baseline 0.35 ±0 (n=3)" in text
    data = json.loads(project.tuneplay("decide", "script", "--format", "json", check=True).stdout)
    assert data["verdict"] == "inconclusive" and data["comparison"]["seed_ignored"] == ["candidate", "baseline"]
    refused = project.tuneplay("decide", "script", "--adopt")
    assert refused.returncode == 1 and "not adopted: the verdict is inconclusive" in refused.stdout

    report = json.loads(project.tuneplay("report", "script", "--format", "json", check=True).stdout)
    (seed,) = [f for f in report["findings"] if f["kind"] == "seed_ignored"]
    assert seed["severity"] == "warn" and "the workload ignores its seed" in seed["message"]
    report_text = project.tuneplay("report", "script", "--width", "80", check=True).stdout
    assert "▲ [seed_ignored] study: Seed reruns are identical: all 3 candidate" in report_text


def test_rerun_warns_when_the_command_never_passes_the_seed() -> None:
    from engine.cli_analysis import seed_note

    assert seed_note({"command": ["python", "train.py"]}).startswith("note: the command has no {seed}")
    assert seed_note({"command": ["python", "train.py", "--seed={seed}"]}) is None
    assert seed_note("builtin:digits-mlp") is None


def test_status_and_report_flag_steps_past_the_budget_once_and_show_failure_tails(project: Project) -> None:
    script_study(project)
    status = project.tuneplay("status", check=True).stdout
    flag = ("▲ 3 of 7 trials reported steps past max_train_steps 200 (up to step 200): the workload "
            'runs longer than its budget; pass {max_train_steps} to it (e.g. "--max_iters={max_train_steps}").')
    assert status.count("past max_train_steps") == 1 and f"    {flag}" in status
    lines = status.splitlines()
    at = next(i for i, ln in enumerate(lines) if "failed: exited with code 1: ValueError: bad lr" in ln)
    assert lines[at:at + 6] == [lines[at], *(f"      │ {ln}" for ln in TRACEBACK)]
    assert any(ln.endswith("failed: worker exited with code -9") for ln in lines)

    report = json.loads(project.tuneplay("report", "script", "--format", "json", check=True).stdout)
    (steps,) = [f for f in report["findings"] if f["kind"] == "steps_past_budget"]
    assert steps["message"] == flag[2:] and steps["evidence"]["n_over"] == 3
    assert report["n_failed"] == 2
    crashed = next(f for f in report["failed_trials"] if f["tail"])
    assert crashed["tail"] == TRACEBACK and crashed["error"].startswith("exited with code 1")
    text = project.tuneplay("report", "script", "--width", "80", check=True).stdout
    assert "── Failed trials (2, latest first)" in text and "   │ ValueError: bad lr" in text
    assert text.count("reported steps past max_train_steps") == 1


def test_export_gives_a_hyperparameter_named_device_its_own_column(project: Project) -> None:
    store, study = script_study(project)
    (t,) = store.add_trials(study.id, [NewTrial({"learning_rate": 0.01, "device": "cuda:1"}, 5)])
    store.claim_trials("w", "gpu0")
    finish(store, t.id, TrialState.COMPLETED, 0.4)
    out = project.tuneplay("export", "script", check=True).stdout
    df = pd.read_csv(io.StringIO(out))
    assert out.splitlines()[0].split(",").count("device") == 1
    row = df[df["id"] == t.id].iloc[0]
    assert row["device"] == "gpu0" and row["hp.device"] == "cuda:1"
    path = project.path / "t.parquet"
    project.tuneplay("export", "script", "--format", "parquet", "-o", str(path), check=True)
    assert pd.read_parquet(path).columns.is_unique
    assert "hp.device" in project.tuneplay("export", "--help", check=True).stdout


def test_equal_best_values_from_seeds_that_were_used_are_a_coarse_metric_not_an_ignored_seed(project: Project) -> None:
    from engine.store.base import MetricRow

    store, study = script_study(project)
    plan = plan_reruns(store, study, best_k=1, seeds=3)
    for t in store.claim_trials("w", "cpu", limit=len(plan.trials)):
        # the same best value (an error rate on a small set), but curves that differ by seed
        store.write_metrics([MetricRow(t.id, 0, "val_loss", 1.0 + t.seed % 97 / 1000),
                             MetricRow(t.id, 199, "val_loss", 0.31 if t.kind == "rerun" else 0.35)])
        finish(store, t.id, TrialState.COMPLETED, 0.31 if t.kind == "rerun" else 0.35)
    data = json.loads(project.tuneplay("decide", "script", "--format", "json", check=True).stdout)
    assert data["comparison"]["seed_ignored"] == [] and "ignores its seed" not in data["comparison"]["reason"]
    assert data["verdict"] == "adopt"  # 0.31 on every seed against 0.35 on every seed
