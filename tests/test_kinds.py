"""The closed name sets are enums that are their stored strings, so old records read back
and new ones store the same text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.kinds import Mode, Search, TrialKind, Verdict
from engine.spec import parse_study, spec_from_dict
from engine.store import MemoryStorage, NewTrial, open_store

STUDY = """\
[study]
name = "s"
workload = "builtin:digits-mlp"
max_train_steps = 10
budget = 2
mode = "max"
search = "bayesian"
metric = "val_error"
[nuisance]
learning_rate = { low = 0.01, high = 0.1, scale = "log" }
"""


def test_mode_sign_and_order() -> None:
    assert (Mode.MIN.sign, Mode.MAX.sign) == (1.0, -1.0)
    assert Mode.MIN.better(0.1, 0.2) and Mode.MAX.better(0.2, 0.1) and not Mode.MAX.better(0.1, 0.1)
    assert Mode("min") is Mode.MIN and f"{Mode.MAX}" == "max" and json.dumps(Mode.MAX) == '"max"'
    with pytest.raises(ValueError):
        Mode("minimum")


def test_a_spec_carries_enums_and_round_trips() -> None:
    spec = parse_study(STUDY, "s.toml")
    assert spec.mode is Mode.MAX and spec.search is Search.BAYESIAN
    again = spec_from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.mode is Mode.MAX and again.search is Search.BAYESIAN


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_stores_give_back_enums(kind: str, tmp_path: Path) -> None:
    store = MemoryStorage() if kind == "memory" else open_store(tmp_path / "ws")
    exp = store.create_experiment("e", "builtin:x")
    base = store.add_baseline(exp.id, {"lr": 0.1}, "val_error", "min", 10)
    study = store.create_study(exp.id, "s", {"max_train_steps": 10}, seed=0)
    (trial,) = store.add_trials(study.id, [NewTrial({"lr": 0.1}, 1, kind="rerun")])
    decision = store.record_decision(exp.id, study.id, "adopt", {}, 1, "welch", {}, "why", "")
    assert base.mode is Mode.MIN and store.list_baselines(exp.id)[0].mode is Mode.MIN
    assert trial.kind is TrialKind.RERUN and store.get_trial(trial.id).kind is TrialKind.RERUN
    assert decision.verdict is Verdict.ADOPT and store.list_decisions()[0].verdict is Verdict.ADOPT


def test_a_stored_study_round_trips_through_its_typed_form() -> None:
    from engine.spec import StoredStudy

    stored = StoredStudy(parse_study(STUDY, "s.toml"), {"optimizer": "adam", "width": 64}, 2, TrialKind.BASELINE)
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert StoredStudy.from_dict(as_json) == stored
    assert stored.hyperparameters({"learning_rate": 0.05}) == {"optimizer": "adam", "width": 64, "learning_rate": 0.05}
    # a study stored before these keys existed reads back with their defaults
    bare = {k: v for k, v in as_json.items() if k not in ("base_config", "baseline_version", "kind", "gpus_per_trial")}
    old = StoredStudy.from_dict(bare)
    assert (old.base_config, old.baseline_version, old.kind, old.spec.gpus_per_trial) == ({}, None, None, 1)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("studies/*.toml")))
def test_every_shipped_study_round_trips(path: Path) -> None:
    from engine.spec import load_study

    spec = load_study(str(path))
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_an_unreadable_stored_spec_is_a_store_error_naming_the_study() -> None:
    from engine.spec import stored_study
    from engine.store import StoreError

    store = MemoryStorage()
    exp = store.create_experiment("e", "builtin:x")
    study = store.create_study(exp.id, "handmade", {"max_train_steps": 10}, seed=0)
    with pytest.raises(StoreError, match="study 'handmade': its stored spec is unreadable"):
        stored_study(study)
