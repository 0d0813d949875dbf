"""The built-in workloads: metadata, the training loop contract, resume, divergence."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.workloads.builtin import BUILTINS, OPTIMIZERS, SCHEDULES
from tests.fake_trial import FakeTrial as SharedFakeTrial

ROOT = Path(__file__).resolve().parents[1]

# Small settings so every workload trains in well under a second per run on a CPU.
TINY: dict[str, dict[str, Any]] = {
    "digits-mlp": {"width": 32},
    "digits-cnn": {"channels": 8},
    "tiny-lm": {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32, "batch_size": 8},
}


class FakeTrial(SharedFakeTrial):
    """The shared fake trial, with this file's short defaults."""

    def __init__(self, max_train_steps: int = 10, eval_every: int = 5, seed: int = 0,
                 stop_after_checkpoint: int | None = None) -> None:
        super().__init__(max_train_steps, eval_every, seed, stop_after_checkpoint)


class RecordingHP(dict):  # type: ignore[type-arg]
    """A hyperparameter dict that remembers which names were read."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def train_fn(name: str) -> Callable[[dict[str, Any], Any], None]:
    module, func = BUILTINS[name].entry.split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def hp_for(name: str, **overrides: Any) -> dict[str, Any]:
    return {**BUILTINS[name].defaults(), **TINY[name], **overrides}


def run(name: str, trial: FakeTrial, **overrides: Any) -> FakeTrial:
    train_fn(name)(hp_for(name, **overrides), trial)
    return trial


# --- metadata --------------------------------------------------------------------------


def test_importing_builtin_metadata_does_not_import_torch() -> None:
    code = "import sys, engine.workloads.builtin; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_metadata_is_consistent(name: str) -> None:
    info = BUILTINS[name]
    assert info.ref == f"builtin:{name}" and info.kind == "builtin"
    assert {"train_loss", "val_loss", "val_error"} <= set(info.metrics)
    assert info.default_metric in info.metrics and set(info.chance) <= set(info.metrics)
    assert info.hyperparameters and set(info.shape_keys) <= set(info.hyperparameters)
    for key, hp in info.hyperparameters.items():
        assert hp.name == key and hp.help, key
        if hp.kind == "choice":
            assert hp.choices and hp.default in hp.choices, key
        if hp.low is not None:
            assert hp.default >= hp.low, key
        if hp.high is not None:
            assert hp.default <= hp.high, key
    assert callable(train_fn(name))


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_train_reads_exactly_the_declared_hyperparameters(name: str) -> None:
    hp = RecordingHP(hp_for(name))
    train_fn(name)(hp, FakeTrial(max_train_steps=2, eval_every=1))
    assert hp.read == set(BUILTINS[name].hyperparameters or {})


def test_defaults_alone_are_a_complete_config() -> None:
    hp = BUILTINS["digits-mlp"].defaults()
    trial = FakeTrial(max_train_steps=3, eval_every=2)
    train_fn("digits-mlp")(hp, trial)
    assert trial.steps() == [0, 2]


# --- the loop contract -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_reports_metrics_and_checkpoints_at_eval_points(name: str) -> None:
    trial = run(name, FakeTrial(max_train_steps=8, eval_every=3))
    assert trial.steps() == [0, 3, 6, 7]
    assert sorted(trial.checkpoints) == [0, 3, 6, 7]
    for _, metrics in trial.reports:
        assert set(BUILTINS[name].metrics) == set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0.0 <= metrics["val_error"] <= 1.0


def test_digits_mlp_with_adam_learns() -> None:
    trial = run(
        "digits-mlp",
        FakeTrial(max_train_steps=300, eval_every=50),
        width=128,
        depth=2,
        batch_size=64,
        optimizer="adam",
        learning_rate=1e-3,
    )
    first, last = trial.reports[0][1], trial.reports[-1][1]
    assert trial.steps()[-1] == 299
    assert last["val_error"] < 0.15 < first["val_error"]
    assert last["val_error"] < BUILTINS["digits-mlp"].chance["val_error"]


def test_huge_learning_rate_reports_non_finite_loss_and_stops_early() -> None:
    trial = run(
        "digits-mlp",
        FakeTrial(max_train_steps=200, eval_every=50),
        optimizer="sgd",
        learning_rate=1e6,
    )
    step, metrics = trial.reports[-1]
    assert not math.isfinite(metrics["train_loss"])
    assert step < 199 and step not in trial.checkpoints


def test_stop_request_ends_the_run_after_the_current_step() -> None:
    trial = run(
        "digits-mlp", FakeTrial(max_train_steps=100, eval_every=10, stop_after_checkpoint=20)
    )
    assert trial.steps() == [0, 10, 20]


@pytest.mark.parametrize(
    "name,steps,every,stop_at",
    [
        ("digits-mlp", 150, 25, 100),  # 21 steps per epoch: the resume crosses epochs
        ("digits-cnn", 30, 10, 10),
        ("tiny-lm", 12, 4, 4),
    ],
)
def test_resume_continues_exactly_like_an_uninterrupted_run(
    name: str, steps: int, every: int, stop_at: int
) -> None:
    hp = {
        "dropout": 0.2,
        "optimizer": "adam",
        "schedule": "linear_warmup_cosine",
        "warmup_fraction": 0.1,
    }
    whole = run(name, FakeTrial(steps, every, seed=3), **hp)
    resumed = run(name, FakeTrial(steps, every, seed=3, stop_after_checkpoint=stop_at), **hp)
    assert resumed.steps()[-1] == stop_at
    resumed.stop = False
    run(name, resumed, **hp)  # restore() picks up at stop_at + 1
    assert resumed.steps() == whole.steps()
    for (step, got), (_, want) in zip(resumed.reports, whole.reports):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), step


def test_same_seed_reproduces_and_a_new_seed_differs() -> None:
    a = run("digits-mlp", FakeTrial(20, 10, seed=1), dropout=0.1)
    b = run("digits-mlp", FakeTrial(20, 10, seed=1), dropout=0.1)
    c = run("digits-mlp", FakeTrial(20, 10, seed=2), dropout=0.1)
    assert a.reports == b.reports
    assert a.reports != c.reports


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(optimizer: str) -> None:
    lr = 0.1 if optimizer in ("sgd", "momentum", "nesterov") else 3e-3
    trial = run(
        "digits-mlp",
        FakeTrial(60, 59),
        optimizer=optimizer,
        learning_rate=lr,
        weight_decay=1e-4,
        grad_clip=1.0,
    )
    (_, first), (_, last) = trial.reports
    assert last["val_loss"] < first["val_loss"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_trains(schedule: str) -> None:
    trial = run(
        "digits-mlp", FakeTrial(60, 59), schedule=schedule, label_smoothing=0.1, activation="tanh"
    )
    (_, first), (_, last) = trial.reports
    assert last["val_loss"] < first["val_loss"]


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "silu"])
def test_every_activation_runs_in_the_cnn_and_the_lm(activation: str) -> None:
    for name in ("digits-cnn", "tiny-lm"):
        trial = run(name, FakeTrial(2, 1), activation=activation)
        assert trial.steps() == [0, 1]


def test_untied_lm_head_runs() -> None:
    trial = run(
        "tiny-lm", FakeTrial(3, 2), tie_embeddings=False, optimizer="momentum", learning_rate=0.05
    )
    assert trial.steps() == [0, 2]


@pytest.mark.parametrize(
    "name,overrides,key",
    [
        ("digits-mlp", {"optimizer": "rmsprop"}, "optimizer"),
        ("digits-mlp", {"schedule": "step"}, "schedule"),
        ("digits-mlp", {"dropout": 1.0}, "dropout"),
        ("digits-mlp", {"batch_size": 5000}, "batch_size"),
        ("digits-cnn", {"activation": "elu"}, "activation"),
        ("tiny-lm", {"n_heads": 3}, "n_heads"),
    ],
)
def test_bad_values_name_the_hyperparameter(name: str, overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        run(name, FakeTrial(2, 1), **overrides)


# --- the shared pieces -----------------------------------------------------------------


def test_schedules_have_the_documented_shape() -> None:
    from engine.workloads.common import OptimConfig, lr_at

    hp = {**BUILTINS["digits-mlp"].defaults(), "learning_rate": 1.0, "warmup_fraction": 0.1}

    def lrs(schedule: str) -> list[float]:
        cfg = OptimConfig.from_hp({**hp, "schedule": schedule})
        return [lr_at(s, cfg, 100) for s in range(100)]

    assert lrs("constant") == [1.0] * 100
    cosine, decay, warm = lrs("cosine"), lrs("linear_decay"), lrs("linear_warmup_cosine")
    assert cosine[0] == 1.0 and cosine[-1] < 0.01 and cosine == sorted(cosine, reverse=True)
    assert decay[0] == 1.0 and decay[50] == pytest.approx(0.5) and decay[-1] > 0
    assert warm[0] == pytest.approx(0.1) and warm[9] == 1.0 and max(warm) == 1.0
    assert warm[10:] == sorted(warm[10:], reverse=True) and warm[-1] < 0.01


def test_epoch_sampler_is_a_pure_function_of_seed_and_step() -> None:
    import torch

    from engine.workloads.common import EpochSampler

    a = EpochSampler(100, 30, seed=7)
    epoch0 = torch.cat([a.indices(s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 90  # no repeats within an epoch
    later = a.indices(10)
    fresh = EpochSampler(100, 30, seed=7)
    assert torch.equal(fresh.indices(10), later) and torch.equal(fresh.indices(0), epoch0[:30])
    assert not torch.equal(EpochSampler(100, 30, seed=8).indices(0), epoch0[:30])
    assert not torch.equal(a.indices(3), epoch0[:30])  # a new epoch, a new order


def test_epoch_orders_are_permutations_independent_of_the_group() -> None:
    import torch

    from engine.workloads.common import epoch_orders

    seeds = [3, 99, 12345, 2**40 + 7]
    group = epoch_orders(seeds, 5, 1437)
    assert group.shape == (4, 1437)
    for k, seed in enumerate(seeds):
        assert sorted(group[k].tolist()) == list(range(1437))
        assert torch.equal(epoch_orders([seed], 5, 1437)[0], group[k])  # alone = in a group
    assert not torch.equal(group[0], group[1])
    assert not torch.equal(epoch_orders(seeds, 6, 1437), group)
    # roughly uniform: where example 0 lands over many seeds spreads over the whole range
    where = (epoch_orders(list(range(2000)), 0, 10) == 0).float().argmax(1)
    assert torch.bincount(where, minlength=10).min() > 120
