"""What the trials say about the workload itself: seed reruns that never vary, steps past
``max_train_steps``, failures with their program's last lines, and export columns that
never repeat a name. Pure parts on built trials; status and export on a memory store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from engine.analysis import analyze_study, report_to_dict, trials_frame
from engine.export import trials_table
from engine.failures import failed_trials, failure_lines
from engine.spec import StudySpec
from engine.status import study_notes
from engine.store.base import NewTrial, Trial, TrialProgress, TrialState
from engine.store.memory import MemoryStorage
from engine.trial_checks import step_overrun
from engine.workloads.command import CommandWorkload
from tests.test_analysis import LR, at, make_spec, make_trial

SCRIPT = CommandWorkload(("python", "train.py", "--out_dir={checkpoint_dir}"))


def command_spec(command: CommandWorkload = SCRIPT, max_train_steps: int = 200) -> StudySpec:
    return dataclasses.replace(make_spec(nuisance=(LR,), max_train_steps=max_train_steps),
                               workload=command)


def search(n: int = 8, steps: int = 200) -> list[Trial]:
    return [make_trial(i, {"learning_rate": at(LR, i / 10)}, 0.5 - 0.01 * i, best_step=150,
                       max_train_steps=steps) for i in range(1, n + 1)]


def reruns(candidate: list[float], baseline: list[float]) -> list[Trial]:
    out = [make_trial(100 + s, {"learning_rate": at(LR, 0.8)}, v, kind="rerun", seed=s)
           for s, v in enumerate(candidate)]
    return out + [make_trial(200 + s, {"learning_rate": 1e-3}, v, kind="baseline", seed=s)
                  for s, v in enumerate(baseline)]


def past_budget(t: Trial, steps_done: int) -> Trial:
    return dataclasses.replace(t, steps_done=steps_done, best_step=steps_done - 1)


# --- seed reruns that never vary -------------------------------------------------------------

def test_the_report_warns_when_seed_reruns_are_identical() -> None:
    report = analyze_study(command_spec(), trials_frame(search() + reruns([0.25] * 5, [0.3] * 5)))
    (found,) = report.findings_of("seed_ignored")
    assert found.severity == "warn" and found.subject == "study"
    assert found.message.startswith(
        "Seed reruns are identical: all 5 candidate and all 5 baseline seed reruns gave exactly "
        "the same val_loss (0.25 and 0.3), so the workload ignores its seed")
    assert 'put {seed} in its command (e.g. "--seed={seed}")' in found.message
    assert set(found.trial_ids) == {*range(100, 105), *range(200, 205)}
    data = json.loads(json.dumps(report_to_dict(report), allow_nan=False))
    (kept,) = [f for f in data["findings"] if f["kind"] == "seed_ignored"]
    assert kept["evidence"]["groups"] == [{"label": "candidate", "n_seeds": 5, "value": 0.25},
                                          {"label": "baseline", "n_seeds": 5, "value": 0.3}]


def test_seed_reruns_that_vary_or_are_too_few_raise_nothing() -> None:
    varied = analyze_study(command_spec(), trials_frame(search() + reruns([0.25, 0.26], [0.3, 0.31])))
    assert not varied.findings_of("seed_ignored")
    one_each = analyze_study(command_spec(), trials_frame(search() + reruns([0.25], [0.3])))
    assert not one_each.findings_of("seed_ignored")
    # the search's own trials with equal values are different points, not seed reruns
    flat = [dataclasses.replace(t, best_value=0.4) for t in search()]
    assert not analyze_study(command_spec(), trials_frame(flat)).findings_of("seed_ignored")


def test_a_python_workload_is_told_to_use_trial_seed() -> None:
    report = analyze_study(make_spec(nuisance=(LR,)), trials_frame(search() + reruns([0.2, 0.25], [0.3] * 3)))
    (found,) = report.findings_of("seed_ignored")
    assert "all 3 baseline seed reruns gave exactly the same val_loss (0.3)" in found.message
    assert "trial.seed" in found.message and "{seed}" not in found.message


# --- steps past max_train_steps --------------------------------------------------------------

def test_steps_past_the_budget_are_flagged_once_for_the_study_and_kept() -> None:
    trials = search()
    trials[:3] = [past_budget(t, 201) for t in trials[:3]]  # range(max_iters + 1): step 200
    report = analyze_study(command_spec(), trials_frame(trials))
    (found,) = report.findings_of("steps_past_budget")
    assert found.message == (
        "3 of 8 trials reported steps past max_train_steps 200 (up to step 200): the workload "
        'runs longer than its budget; pass {max_train_steps} to it (e.g. "--max_iters={max_train_steps}").')
    assert found.trial_ids == (1, 2, 3) and found.severity == "warn"
    assert found.evidence == {"n_over": 3, "n_trained": 8, "max_train_steps": [200], "last_step": 200}
    assert report.n_feasible == 8  # the trials keep their results


def test_steps_within_the_budget_raise_nothing_and_advice_fits_the_workload() -> None:
    assert not analyze_study(command_spec(), trials_frame(search())).findings_of("steps_past_budget")
    assert step_overrun([1, 2], [200, 120], [200, 200], SCRIPT) is None  # last step 199: fine
    passed = CommandWorkload(("python", "train.py", "--max_iters={max_train_steps}"))
    over = step_overrun([1, 2], [201, 0], [200, 200], passed)
    assert over is not None and over.message.startswith(
        "1 of 1 trials reported steps past max_train_steps 200 (up to step 200)")
    assert "its command passes {max_train_steps}, so the script runs past the number" in over.message
    python = step_overrun([1], [450], [400], "mypkg.train:train")
    assert python is not None and "trial.max_train_steps" in python.message
    mixed = step_overrun([1, 2], [301, 205], [300, 200], {"command": ["python", "t.py"]})
    assert mixed is not None and "past max_train_steps (200, 300) (up to step 300)" in mixed.message


# --- failures with their output tails --------------------------------------------------------

def write_log(workspace: Path, trial_id: int, lines: list[str]) -> None:
    folder = workspace / "checkpoints" / str(trial_id)
    folder.mkdir(parents=True)
    (folder / "output.log").write_text("--- attempt 1: [\"python\"] in /x\n" + "\n".join(lines) + "\n")


def failed(i: int, error: str, finished_at: float) -> Trial:
    return dataclasses.replace(make_trial(i, {"learning_rate": 0.01}, None, state="FAILED",
                                          error=error), finished_at=finished_at)


def test_failed_trials_come_latest_first_with_the_tail_of_their_output(tmp_path: Path) -> None:
    write_log(tmp_path, 5, ["step 0 val_loss 0.9", "Traceback (most recent call last):",
                            '  File "train.py", line 3, in <module>', "ValueError: bad lr"])
    trials = [failed(4, "worker exited with code -9", 10.0),
              failed(5, "exited with code 1: ValueError: bad lr (log: /w/output.log)", 20.0),
              failed(6, "x", 5.0), *search(2)]
    shown, total = failed_trials(tmp_path, trials, limit=2)
    assert total == 3 and [f.trial_id for f in shown] == [5, 4]
    assert failure_lines(shown[0], "  ") == [
        "  #5 failed: exited with code 1: ValueError: bad lr (log: /w/output.log)",
        "    │ step 0 val_loss 0.9", "    │ Traceback (most recent call last):",
        '    │   File "train.py", line 3, in <module>', "    │ ValueError: bad lr"]
    assert failure_lines(shown[1]) == ["#4 failed: worker exited with code -9"]  # no output.log


def test_status_notes_overrun_once_and_the_latest_failures(tmp_path: Path) -> None:
    write_log(tmp_path, 12, [f"line {i}" for i in range(9)])
    trials = [past_budget(t, 201) for t in search(4)]
    trials += [failed(10 + i, f"exited with code {i}", float(i)) for i in range(5)]
    study = SimpleNamespace(name="script", spec={"workload": {"command": ["python", "t.py"]}})
    notes = study_notes(tmp_path, study, trials, indent="    ")  # type: ignore[arg-type]
    assert notes[0].startswith("    ▲ 4 of 9 trials reported steps past max_train_steps 200")
    assert sum("past max_train_steps" in n for n in notes) == 1
    assert notes[1:] == [
        "    #14 failed: exited with code 4", "    #13 failed: exited with code 3",
        "    #12 failed: exited with code 2", *(f"      │ line {i}" for i in range(4, 9)),
        "    … and 2 more failed trials (`tuneplay export script` lists every error)"]


def test_the_text_report_has_a_failed_trials_section() -> None:
    from engine.reporting import FAILURES_SHOWN
    from tuneplay_tui.report_cli import build_sections, render_text

    spec = command_spec()
    trials = search(3) + [failed(9, "exited with code 1: ValueError: bad lr", 1.0)]
    report = analyze_study(spec, trials_frame(trials))
    shown, total = failed_trials(None, trials, FAILURES_SHOWN)
    shown[0] = dataclasses.replace(shown[0], tail=("ValueError: bad lr",))
    loaded = SimpleNamespace(report=report, scaling=None, failures=tuple(shown), n_failed=total)
    text = render_text(build_sections(loaded, 100, False))
    assert "── Failed trials (1, latest first)" in text
    assert " #9 failed: exited with code 1: ValueError: bad lr\n   │ ValueError: bad lr" in text


# --- export: one column per name -------------------------------------------------------------

def device_study() -> tuple[MemoryStorage, Any]:
    store = MemoryStorage()
    exp = store.create_experiment("e", "builtin:digits-mlp")
    study = store.create_study(exp.id, "dev", {"metric": "val_loss", "mode": "min", "max_train_steps": 10}, 0)
    store.add_trials(study.id, [NewTrial({"device": "cuda", "seed": 7, "learning_rate": 0.01}, 3)])
    (t,) = store.claim_trials("w", "gpu1")
    store.finish_trial(t.id, TrialProgress(TrialState.COMPLETED, 9, 0.5, 10, 1.0))
    return store, study


def test_export_prefixes_hyperparameters_named_like_a_trial_field(tmp_path: Path) -> None:
    store, study = device_study()
    df = trials_table(store, study)
    assert df.columns.is_unique
    assert list(df.columns) == ["id", "number", "state", "kind", "seed", "hp.device", "hp.seed",
                                "learning_rate", "best_value", "best_step", "steps_done",
                                "max_train_steps", "wall_time", "attempt", "host", "worker", "device", "error"]
    row = df.iloc[0]
    assert (row["device"], row["hp.device"], row["seed"], row["hp.seed"]) == ("gpu1", "cuda", 3, 7)
    df.to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv")  # a repeated name would come back as "device.1"
    assert list(back.columns) == list(df.columns) and back.loc[0, "hp.device"] == "cuda"


def test_export_parquet_with_a_device_hyperparameter(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    store, study = device_study()
    trials_table(store, study).to_parquet(tmp_path / "t.parquet", index=False)
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back.loc[0, "hp.device"] == "cuda" and back.loc[0, "device"] == "gpu1"
