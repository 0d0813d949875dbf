"""Trials that need several GPUs: slots of N GPUs, the width the engine plans and replans,
workers that leave a too-wide trial alone, and a clear refusal on a host with too few GPUs.

GPU lists are faked (``gpus=[...]`` or CUDA_VISIBLE_DEVICES); nothing here trains on a GPU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from engine.cli import main as cli_main
from engine.runner import slots as slots_module
from engine.runner.daemon import Engine
from engine.runner.slots import HostSlots, gpus_shortfall, plan_slots, planned_width
from engine.runner.worker import Worker
from engine.spec import parse_study
from engine.store.base import NewTrial, Storage, Study, TrialProgress, TrialState
from engine.store.memory import MemoryStorage
from tests.conftest import Project

FOUR_GPUS = HostSlots(("0", "1", "2", "3"))

STUDY = """\
[study]
name = "wide"
workload = "builtin:digits-mlp"
max_train_steps = 10
eval_every = 5
budget = 2
gpus_per_trial = {gpus}
[nuisance]
learning_rate = {{ low = 1e-3, high = 3e-2, scale = "log" }}
"""


def _study(store: Storage, name: str, gpus: int | None, states: Mapping[TrialState, int]) -> Study:
    """A stored study of ``gpus`` GPUs per trial (None: stored before the key existed) with
    trials in the given states."""
    exp = store.find_experiment("e") or store.create_experiment("e", "builtin:digits-mlp")
    text = f'[study]\nname = "{name}"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 10\nbudget = 1\n'
    spec: dict[str, Any] = parse_study(text, f"{name}.toml").to_dict()  # a whole stored spec
    if gpus is None:
        del spec["gpus_per_trial"]
    else:
        spec["gpus_per_trial"] = gpus  # wider than this host may have: not validated here
    study = store.create_study(exp.id, name, spec, seed=0)
    for state, n in states.items():
        trials = store.add_trials(study.id, [NewTrial(params={}, seed=i) for i in range(n)])
        ids = [t.id for t in trials]
        if state == TrialState.RUNNING:  # claimed, so its heartbeat is fresh
            store.claim_trials("w", "cpu", limit=n, study_id=study.id)
        elif state == TrialState.PAUSED:
            store.set_state(ids, state, only_from=[TrialState.QUEUED])
        elif state.is_finished():
            store.finish_trials([(i, TrialProgress(state=state)) for i in ids])
    return study


# -- slot planning -------------------------------------------------------------------------
def test_four_gpus_two_per_trial_form_two_slots_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module.os, "cpu_count", lambda: 16)
    slots = plan_slots(gpus=["0", "1", "2", "3"], gpus_per_trial=2)
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert [s.label for s in slots] == ["gpu0-1", "gpu2-3"]
    assert [s.name for s in slots] == ["gpu0-1.0", "gpu2-3.0"]
    assert {s.device for s in slots} == {"cuda"} and {s.width for s in slots} == {2}
    assert {s.threads for s in slots} == {8}  # the cores shared between two slots


def test_leftover_gpus_idle_and_slots_per_gpu_only_applies_to_one_gpu_per_trial() -> None:
    slots = plan_slots(slots_per_gpu=2, gpus=["0", "1", "2"], gpus_per_trial=2)
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1"]
    assert plan_slots(gpus=["2", "5"], gpus_per_trial=2)[0].label == "gpu2+5"


def test_one_gpu_per_trial_plans_as_before() -> None:
    slots = plan_slots(slots_per_gpu=2, gpus=["0", "1"])
    assert [s.name for s in slots] == ["gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"]
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1"]
    assert {s.width for s in slots} == {1}


def test_without_a_gpu_one_gpu_per_trial_runs_on_cpu_slots_and_more_cannot_be_planned() -> None:
    slots = plan_slots(cpu_slots=3, gpus=[])
    assert [s.name for s in slots] == ["cpu.0", "cpu.1", "cpu.2"] and {s.device for s in slots} == {"cpu"}
    with pytest.raises(ValueError, match="2 GPUs per trial, but this host has no GPU"):
        plan_slots(gpus=[], gpus_per_trial=2)


def test_the_reason_a_host_is_too_small_is_one_clear_line() -> None:
    assert gpus_shortfall(4, ["0", "1"]) == "4 GPUs per trial, but this host has 2 (CUDA_VISIBLE_DEVICES=0,1)"
    assert gpus_shortfall(2, []) == "2 GPUs per trial, but this host has no GPU"
    assert gpus_shortfall(2, ["0", "1"]) is None and gpus_shortfall(1, []) is None
    assert HostSlots(("0", "1")).problem(4) == (
        "study.gpus_per_trial: 4 GPUs per trial, but this host has 2 (CUDA_VISIBLE_DEVICES=0,1)"
    )


# -- the width the engine plans --------------------------------------------------------------
def test_the_engine_plans_for_the_widest_study_with_work_left_that_fits() -> None:
    store = MemoryStorage()
    assert planned_width(store, FOUR_GPUS) == 1
    _study(store, "old", None, {TrialState.QUEUED: 1})  # stored before gpus_per_trial existed
    _study(store, "done", 4, {TrialState.COMPLETED: 2})
    assert planned_width(store, FOUR_GPUS) == 1
    _study(store, "paused", 2, {TrialState.PAUSED: 1, TrialState.COMPLETED: 1})
    assert planned_width(store, FOUR_GPUS) == 2
    _study(store, "too-wide", 8, {TrialState.QUEUED: 1})  # cannot fit: failed, not planned for
    assert planned_width(store, FOUR_GPUS) == 2
    _study(store, "running", 4, {TrialState.RUNNING: 1})
    assert planned_width(store, FOUR_GPUS) == 4


def _engine(store: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: HostSlots) -> Engine:
    """An engine whose workers are only recorded, never started."""
    engine = Engine(store, tmp_path, host.plan(), host=host)
    monkeypatch.setattr(engine, "_spawn", lambda slot: engine.workers.__setitem__(slot.name, cast(Any, None)))
    monkeypatch.setattr(engine, "_stop_workers", lambda: None)
    return engine


def _slots_meta(store: Storage) -> list[str]:
    return list(json.loads(store.get_meta("engine.slots") or "[]"))


def test_the_engine_starts_with_wide_slots_when_a_wide_study_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStorage()
    _study(store, "wide", 2, {TrialState.QUEUED: 2})
    engine = _engine(store, tmp_path, monkeypatch, FOUR_GPUS)
    engine.start()
    assert _slots_meta(store) == ["gpu0-1.0", "gpu2-3.0"] == list(engine.workers)


def test_the_engine_replans_wider_once_nothing_runs_and_narrow_again_when_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStorage()
    narrow = _study(store, "narrow", 1, {TrialState.RUNNING: 1})
    engine = _engine(store, tmp_path, monkeypatch, FOUR_GPUS)
    engine.start()
    assert _slots_meta(store) == ["gpu0.0", "gpu1.0", "gpu2.0", "gpu3.0"]
    wide = _study(store, "wide", 4, {TrialState.QUEUED: 1})
    engine._fit_slots()
    assert engine.width == 1, "replanned while a trial was running"
    store.finish_trial(store.list_trials(narrow.id)[0].id, TrialProgress(state=TrialState.COMPLETED))
    engine._fit_slots()
    assert _slots_meta(store) == ["gpu0-3.0"] == list(engine.workers)
    store.finish_trial(store.list_trials(wide.id)[0].id, TrialProgress(state=TrialState.COMPLETED))
    engine._fit_slots()
    assert _slots_meta(store) == ["gpu0.0", "gpu1.0", "gpu2.0", "gpu3.0"]


def test_trials_needing_more_gpus_than_the_host_has_fail_saying_why(tmp_path: Path) -> None:
    store = MemoryStorage()
    wide = _study(store, "wide", 2, {TrialState.QUEUED: 2})
    fits = _study(store, "fits", 1, {TrialState.QUEUED: 1})
    engine = Engine(store, tmp_path, plan_slots(cpu_slots=2, gpus=[]))  # a host without a GPU
    engine._fit_slots()
    failed = store.list_trials(wide.id)
    assert {t.state for t in failed} == {TrialState.FAILED}
    assert {t.error for t in failed} == {"study.gpus_per_trial: 2 GPUs per trial, but this host has no GPU"}
    assert store.list_trials(fits.id)[0].state == TrialState.QUEUED
    assert engine.workers == {}, "replanned a host that has nothing else to offer"


# -- workers --------------------------------------------------------------------------------
def test_a_worker_leaves_a_trial_wider_than_its_slot_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStorage()
    wide = _study(store, "wide", 2, {TrialState.QUEUED: 1})
    _study(store, "narrow", 1, {TrialState.QUEUED: 1})
    cpu = Worker(store, tmp_path, "cpu.0", "cpu", "cpu")
    assert cpu.claim() == []  # and the narrow trial behind it waits its turn
    assert {t.state for t in store.list_trials()} == {TrialState.QUEUED}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    two = Worker(store, tmp_path, "gpu0-1.0", "cuda", "gpu0-1")
    assert [t.study_id for t in two.claim()] == [wide.id]  # claimed only: nothing trains here


def test_a_worker_claims_narrow_trials_while_a_wide_study_waits_behind_them(tmp_path: Path) -> None:
    store = MemoryStorage()
    narrow = _study(store, "narrow", 1, {TrialState.QUEUED: 1})
    _study(store, "wide", 2, {TrialState.QUEUED: 1})
    claimed = Worker(store, tmp_path, "cpu.0", "cpu", "cpu").claim()
    assert [t.study_id for t in claimed] == [narrow.id]


# -- the command line ------------------------------------------------------------------------
def test_run_refuses_a_study_needing_more_gpus_than_the_host_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "wide.toml"
    study.write_text(STUDY.format(gpus=4))
    ws = tmp_path / ".tuneplay"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cli_main(["--workspace", str(ws), "run", str(study)]) == 2
    err = capsys.readouterr().err
    assert err == f"{study}: study.gpus_per_trial: 4 GPUs per trial, but this host has no GPU\n"
    assert not ws.exists()


@pytest.mark.slow
def test_tuneplay_run_with_two_gpus_refuses_four_per_trial_and_stores_nothing(project: Project) -> None:
    study = project.write("wide.toml", STUDY.format(gpus=4))
    project.env["CUDA_VISIBLE_DEVICES"] = "0,1"
    proc = project.tuneplay("run", str(study))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpus_per_trial" in lines[0], proc.stderr
    assert "4 GPUs per trial, but this host has 2 (CUDA_VISIBLE_DEVICES=0,1)" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (project.workspace / "tuneplay.db").exists()
    assert "no workspace yet" in project.tuneplay("status", check=True).stdout
