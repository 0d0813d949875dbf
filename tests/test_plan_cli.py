"""``tuneplay next STUDY -o FILE`` as a user runs it: the file it writes passes ``tuneplay
validate``, differs from the study in the planned ways only, with a comment on each change;
``tuneplay report`` opens with the same plan (``next_round`` first in its JSON). The
workspace is written through the store (no training), so each outcome is the one under test."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

from engine.spec import load_study
from engine.store.base import TrialProgress, TrialState
from engine.workspace import launch_study
from tests.conftest import ROOT, Project


def finished_study(project: Project, name: str, at_top: bool = True):  # type: ignore[no-untyped-def]
    """The shipped study ``name`` with every trial finished: the best ones at the top of the
    learning-rate range, their best checkpoints at the very end of training."""
    src = ROOT / "studies" / f"{name}.toml"
    path = project.write(f"{name}.toml", src.read_text())
    spec = load_study(path)
    store = project.store()
    launch = launch_study(store, spec)
    lr = spec.param("learning_rate")
    assert lr is not None
    for t in store.claim_trials("w", "cpu", limit=1000):
        u = lr.to_unit(t.params["learning_rate"])  # type: ignore[union-attr]
        value = round(0.9 - 0.8 * (u if at_top else 1 - abs(u - 0.5)), 4)
        last = spec.max_train_steps - 1
        store.finish_trial(t.id, TrialProgress(TrialState.COMPLETED, last, value, last + 1, 1.0))
    return spec, launch.study


def test_next_writes_a_valid_study_that_differs_in_the_planned_ways(project: Project) -> None:
    spec, _ = finished_study(project, "digits-mlp-lr-too-low")
    done = project.tuneplay("next", "digits-mlp-lr-too-low", "-o", "next.toml", check=True)
    assert "wrote next.toml: study 'digits-mlp-lr-too-low-r2'" in done.stdout
    assert "max_train_steps: longer 200 → 300" in done.stdout
    assert "learning_rate: expand [1.00e-05, 0.001] → [1.00e-05, 0.01] log" in done.stdout
    check = project.tuneplay("validate", "next.toml")
    assert check.returncode == 0 and "next.toml: ok — study 'digits-mlp-lr-too-low-r2'" in check.stdout

    old = tomllib.loads((ROOT / "studies" / "digits-mlp-lr-too-low.toml").read_text())
    for body in old["nuisance"].values():
        body.setdefault("scale", "linear")  # the draft writes every scale out
    text = (project.path / "next.toml").read_text()
    new = tomllib.loads(text)
    changed = {f"study.{k}" for k in old["study"] if new["study"][k] != old["study"][k]}
    changed |= {f"nuisance.{k}" for k in old["nuisance"] if new["nuisance"][k] != old["nuisance"][k]}
    assert changed == {"study.name", "study.max_train_steps", "study.budget", "nuisance.learning_rate"}
    assert new["study"]["max_train_steps"] == 300 and new["study"]["budget"] == 48
    assert new["nuisance"]["learning_rate"] == {"low": 1e-5, "high": 0.01, "scale": "log"}
    assert new["fixed"] == old["fixed"] and new["study"]["experiment"] == spec.experiment
    lines = {ln.split(" = ")[0]: ln for ln in text.splitlines() if " = " in ln}
    for key in ("max_train_steps", "budget", "learning_rate"):
        assert "# next round: " in lines[key]
    assert "# next round: longer (was 200): " in lines["max_train_steps"]
    assert "# next round: expand (was [1.00e-05, 0.001]): " in lines["learning_rate"]
    assert "# next round: insensitive, kept: no visible effect" in lines["momentum"]  # lr alone decides
    assert all("#" not in lines[k] for k in ("metric", "optimizer", "seed", "eval_every"))

    again = project.tuneplay("next", "digits-mlp-lr-too-low", "-o", "next.toml")
    assert again.returncode == 2 and "next.toml exists; pass --force" in again.stderr


def test_the_report_opens_with_the_same_plan(project: Project) -> None:
    finished_study(project, "digits-mlp-lr-too-low")
    data = json.loads(project.tuneplay("report", "digits-mlp-lr-too-low", "--format", "json",
                                       check=True).stdout)
    assert list(data)[:5] == ["study", "metric", "mode", "protocol", "next_round"]
    plan = data["next_round"]
    assert (plan["training"]["action"], plan["training"]["proposed"]) == ("longer", 300)
    assert (plan["ranges"][0]["name"], plan["ranges"][0]["action"]) == ("learning_rate", "expand")
    assert plan["draft"].startswith('# Next round of study "digits-mlp-lr-too-low"')
    text = project.tuneplay("report", "digits-mlp-lr-too-low", "--width", "80", check=True).stdout
    assert text.index("── Next round") < text.index("── Findings")
    assert " ▶ max_train_steps: longer 300" not in text and " ▶ max_train_steps: longer 200 → 300 — " in text
    written = project.tuneplay("next", "digits-mlp-lr-too-low", check=True)  # beside the study's file
    assert (project.path / "digits-mlp-lr-too-low-r2.toml").read_text() == plan["draft"]
    assert "tuneplay validate digits-mlp-lr-too-low-r2.toml" in written.stdout


def test_next_of_a_command_study_writes_its_workload_table(project: Project) -> None:
    shutil.copytree(ROOT / "studies" / "own-script", project.path / "own-script")
    spec, _ = finished_study(project, "own-script")
    draft = project.tuneplay("next", "own-script-lr", "-o", "-", check=True).stdout
    new = tomllib.loads(draft)
    workload = new["study"]["workload"]
    assert "[study.workload]" in draft and isinstance(workload, dict)
    assert workload["command"] == list(spec.workload.command)  # type: ignore[union-attr]
    assert workload["stdout"] == list(spec.workload.stdout)  # type: ignore[union-attr]
    assert Path(workload["cwd"]) == project.path / "own-script"
    out = project.write("own-next.toml", draft)
    check = project.tuneplay("validate", str(out))
    assert check.returncode == 0, check.stderr
    assert load_study(out).workload == spec.workload
