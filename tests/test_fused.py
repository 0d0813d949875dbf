"""Fused training: K trials as one computation, each trial behaving as if it ran alone."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.workloads.base import WorkloadInfo
from engine.workloads.builtin import BUILTINS, OPTIMIZERS, SCHEDULES
from engine.workloads.common import OptimConfig, build_optimizer, lr_at
from engine.workloads.digits import train_cnn, train_mlp
from engine.workloads.fused import (
    FUSED,
    auto_group_size,
    fuse_key,
    fused_train_function,
    stacked_optimizer_step,
    train_cnn_fused,
    train_lm_fused,
    train_mlp_fused,
)
from engine.workloads.fused_optim import schedule_table
from engine.workloads.lm import train_lm
from tests.fake_trial import FakeTrial

# CUDA runs the same checks where a GPU is present (TF32 convolutions and the LM's bf16 autocast
# differ between a grouped and a plain kernel, hence the looser tolerance there).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOOSE = {"cpu": 1e-4, "cuda": 2e-2}

TINY: dict[str, dict[str, Any]] = {
    "digits-mlp": {"width": 32},
    "digits-cnn": {"channels": 8},
    "tiny-lm": {"d_model": 32, "n_layers": 1, "n_heads": 2, "seq_len": 32, "batch_size": 8},
}


def hp_for(name: str, **overrides: Any) -> dict[str, Any]:
    return {**BUILTINS[name].defaults(), **TINY[name], **overrides}


# Four trials of one shape that differ in everything a trial may keep to itself.
MIX: list[dict[str, Any]] = [
    {"learning_rate": 3e-3, "schedule": "cosine", "weight_decay": 1e-2, "grad_clip": 0.5},
    {
        "learning_rate": 1e-3,
        "schedule": "linear_warmup_cosine",
        "warmup_fraction": 0.2,
        "label_smoothing": 0.1,
        "beta1": 0.8,
        "momentum": 0.5,
    },
    {"learning_rate": 8e-3, "schedule": "linear_decay", "epsilon": 1e-6, "grad_clip": 2.0},
    {"learning_rate": 5e-4, "beta2": 0.99, "weight_decay": 1e-3, "label_smoothing": 0.05},
]


def group(name: str, optimizer: str = "adam", **shared: Any) -> list[dict[str, Any]]:
    scale = 30.0 if optimizer in ("sgd", "momentum", "nesterov") else 1.0
    return [
        hp_for(
            name,
            **{**m, "optimizer": optimizer, **shared, "learning_rate": m["learning_rate"] * scale},
        )
        for m in MIX
    ]


def assert_same_curve(got: FakeTrial, want: FakeTrial, rel: float = 1e-4) -> None:
    assert got.steps() == want.steps()
    for (step, g), (_, w) in zip(got.reports, want.reports):
        assert set(g) == set(w), step
        for key in w:
            if key == "val_error":
                assert abs(g[key] - w[key]) <= max(1 / 400 + 1e-9, rel), (step, key)
            else:
                assert g[key] == pytest.approx(w[key], rel=rel, abs=1e-6), (step, key)


def alone(train: Any, hp: dict[str, Any], trial: FakeTrial) -> FakeTrial:
    train(hp, trial)
    return trial


# --- a fused trial is the trial alone -------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fused_mlp_trials_match_their_unfused_runs(optimizer: str, device: str) -> None:
    hps = group("digits-mlp", optimizer)
    fused = [FakeTrial(seed=10 + k, device=device) for k in range(len(hps))]
    train_mlp_fused(hps, fused)
    for k, hp in enumerate(hps):
        assert_same_curve(fused[k], alone(train_mlp, hp, FakeTrial(seed=10 + k, device=device)))
        assert fused[k].steps() == [0, 10, 20, 30, 39]


@pytest.mark.parametrize("device", DEVICES)
def test_fused_cnn_trials_match_their_unfused_runs(device: str) -> None:
    hps = group("digits-cnn", "adamw")[:3]
    fused = [FakeTrial(12, 5, seed=k, device=device) for k in range(3)]
    train_cnn_fused(hps, fused)
    for k, hp in enumerate(hps):
        want = alone(train_cnn, hp, FakeTrial(12, 5, seed=k, device=device))
        assert_same_curve(fused[k], want, rel=LOOSE[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tie", [True, False])
def test_fused_lm_trials_match_their_unfused_runs(tie: bool, device: str) -> None:
    hps = [hp_for("tiny-lm", tie_embeddings=tie, **m) for m in MIX[:2]]
    fused = [FakeTrial(6, 5, seed=k, device=device) for k in range(2)]
    train_lm_fused(hps, fused)
    for k, hp in enumerate(hps):
        want = alone(train_lm, hp, FakeTrial(6, 5, seed=k, device=device))
        assert_same_curve(fused[k], want, rel=LOOSE[device])


def test_a_trial_with_dropout_trains_and_is_independent_of_its_group() -> None:
    hps = group("digits-mlp")
    hps[0]["dropout"] = 0.3
    full = [FakeTrial(seed=k) for k in range(4)]
    train_mlp_fused(hps, full)
    pair = [FakeTrial(seed=0), FakeTrial(seed=3)]
    train_mlp_fused([hps[0], hps[3]], pair)
    assert_same_curve(pair[0], full[0], rel=1e-5)  # its dropout masks are its own
    unfused = alone(train_mlp, hps[0], FakeTrial(seed=0)).reports[-1][1]
    no_dropout = alone(train_mlp, {**hps[0], "dropout": 0.0}, FakeTrial(seed=0)).reports[-1][1]
    last = full[0].reports[-1][1]
    assert last["train_loss"] > no_dropout["train_loss"]  # dropout is on while training
    assert abs(last["val_error"] - unfused["val_error"]) < 0.1  # and behaves like torch's


# --- each trial ends on its own ---------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_a_diverging_trial_leaves_at_its_own_step_and_the_others_are_unaffected(
    device: str,
) -> None:
    hps = group("digits-mlp", "sgd")
    hps[2] = {**hps[2], "learning_rate": 1e6, "schedule": "constant", "grad_clip": 0.0}
    with_it = [FakeTrial(seed=k, device=device) for k in range(4)]
    train_mlp_fused(hps, with_it)
    without = [FakeTrial(seed=k, device=device) for k in (0, 1, 3)]
    train_mlp_fused([hps[0], hps[1], hps[3]], without)
    solo = alone(train_mlp, hps[2], FakeTrial(seed=2, device=device))
    step, metrics = with_it[2].reports[-1]
    assert not math.isfinite(metrics["train_loss"]) and set(metrics) == {"train_loss"}
    assert with_it[2].steps() == solo.steps() and step < 39
    for got, want in zip([with_it[0], with_it[1], with_it[3]], without):
        assert_same_curve(got, want, rel=1e-6 if device == "cpu" else 1e-4)


def test_a_group_mostly_diverged_is_compacted_and_the_survivor_trains_on() -> None:
    hps = group("digits-mlp", "sgd")
    for k in (0, 1, 3):
        hps[k] = {**hps[k], "learning_rate": 1e6, "schedule": "constant", "grad_clip": 0.0}
    trials = [FakeTrial(seed=k) for k in range(4)]
    train_mlp_fused(hps, trials)
    assert all(not math.isfinite(trials[k].reports[-1][1]["train_loss"]) for k in (0, 1, 3))
    assert_same_curve(trials[2], alone(train_mlp, hps[2], FakeTrial(seed=2)))
    assert trials[2].checkpoints[39]["model"]["0.weight"].shape == (32, 64)


def test_a_cancelled_trial_stops_reporting_and_the_others_continue() -> None:
    hps = group("digits-mlp")
    trials = [FakeTrial(seed=k) for k in range(4)]
    trials[1].stop_after_checkpoint = 20
    trials[3].stop_after_steps = 15  # cancelled between evaluations, after step 14
    train_mlp_fused(hps, trials)
    assert trials[1].steps() == [0, 10, 20]
    assert trials[3].steps() == [0, 10]
    for k in (0, 2):
        assert_same_curve(trials[k], alone(train_mlp, hps[k], FakeTrial(seed=k)))


def test_the_group_returns_when_every_trial_should_stop() -> None:
    trials = [FakeTrial(seed=k, stop_after_checkpoint=10) for k in range(4)]
    train_mlp_fused(group("digits-mlp"), trials)
    assert all(t.steps() == [0, 10] for t in trials)


# --- checkpoints and resume -------------------------------------------------------------


def test_fused_checkpoints_have_the_unfused_format() -> None:
    hps = group("digits-mlp", "adamw", depth=1, dropout=0.1)
    fused = [FakeTrial(11, 10, seed=k) for k in range(4)]
    train_mlp_fused(hps, fused)
    solo = alone(train_mlp, hps[0], FakeTrial(11, 10, seed=0))
    got, want = fused[0].checkpoints[10], solo.checkpoints[10]
    assert list(got["model"]) == list(want["model"]) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert got["optimizer"]["param_groups"] == want["optimizer"]["param_groups"]
    for index, entry in want["optimizer"]["state"].items():
        mine = got["optimizer"]["state"][index]
        assert list(mine) == list(entry)
        for key, value in entry.items():
            assert mine[key].shape == value.shape and mine[key].dtype == value.dtype
            assert mine[key].device == value.device
    assert got["optimizer"]["state"][0]["step"].item() == 11.0


@pytest.mark.parametrize("optimizer", ["nesterov", "adam"])
def test_checkpoints_move_between_fused_and_unfused_runs(optimizer: str) -> None:
    hps = group("digits-mlp", optimizer)
    whole = [alone(train_mlp, hp, FakeTrial(seed=k)) for k, hp in enumerate(hps)]
    # fused -> unfused: trial 0 pauses at step 20 inside a group, resumes alone
    fused = [FakeTrial(seed=k, stop_after_checkpoint=20 if k == 0 else None) for k in range(4)]
    train_mlp_fused(hps, fused)
    assert fused[0].steps()[-1] == 20
    train_mlp(hps[0], fused[0].resume())
    assert_same_curve(fused[0], whole[0])
    # unfused -> fused: trial 1 pauses alone at step 10, resumes inside a group
    paused = alone(train_mlp, hps[1], FakeTrial(seed=1, stop_after_checkpoint=10)).resume()
    others = [FakeTrial(seed=k) for k in (0, 2)]
    train_mlp_fused([hps[0], hps[1], hps[2]], [others[0], paused, others[1]])
    assert_same_curve(paused, whole[1])


@pytest.mark.parametrize("device", DEVICES)
def test_a_group_resumed_from_different_steps_reproduces_the_uninterrupted_curves(
    device: str,
) -> None:
    hps = group("digits-mlp", "momentum", dropout=0.2)  # 21 steps per epoch: resumes cross epochs
    hps[2]["dropout"] = 0.0
    whole = [FakeTrial(60, 10, seed=k, device=device) for k in range(4)]
    train_mlp_fused(hps, whole)
    stops = [10, 40, 20, None]
    parts = [
        FakeTrial(60, 10, seed=k, stop_after_checkpoint=s, device=device)
        for k, s in enumerate(stops)
    ]
    train_mlp_fused(hps, parts)
    assert [t.steps()[-1] for t in parts] == [10, 40, 20, 59]
    train_mlp_fused(hps, [t.resume() for t in parts])  # starts 11, 41, 21 and done
    for got, want in zip(parts, whole):
        assert_same_curve(got, want, rel=1e-5)


# --- the pieces -------------------------------------------------------------------------


def test_schedule_table_is_lr_at_for_every_trial() -> None:
    base = BUILTINS["digits-mlp"].defaults()
    cfgs = [
        OptimConfig.from_hp({**base, "schedule": s, "learning_rate": lr, "warmup_fraction": w})
        for s in SCHEDULES
        for lr, w in ((0.1, 0.05), (2.0, 0.5), (1e-3, 1.0))
    ]
    for total in (1, 7, 100):
        table = schedule_table(cfgs, torch.arange(total), total)
        want = torch.tensor(
            [[lr_at(s, c, total) for c in cfgs] for s in range(total)], dtype=torch.float64
        )
        assert torch.allclose(table, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_stacked_optimizer_step_matches_torch_optim(optimizer: str) -> None:
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)) for _ in range(3)]
    base = BUILTINS["digits-mlp"].defaults()
    hps = [
        {
            **base,
            "optimizer": optimizer,
            "learning_rate": 0.05 * (k + 1),
            "weight_decay": 0.1 * k,
            "momentum": 0.5 + 0.2 * k,
            "beta1": 0.7 + 0.1 * k,
            "grad_clip": [0.0, 0.3, 5.0][k],
        }
        for k in range(3)
    ]
    opts = [build_optimizer(m, OptimConfig.from_hp(hp)) for m, hp in zip(models, hps)]
    params = [
        torch.stack([list(m.parameters())[j].detach().clone() for m in models]) for j in range(4)
    ]
    columns = {
        name: torch.tensor([float(hp[name]) for hp in hps])
        for name in (
            "learning_rate",
            "weight_decay",
            "momentum",
            "beta1",
            "beta2",
            "epsilon",
            "grad_clip",
        )
    }
    state: dict[str, Any] = {}
    for step in range(4):
        x = torch.randn(6, 5)
        grads = []
        for m, opt, hp in zip(models, opts, hps):
            opt.zero_grad()
            m(x).square().mean().backward()
            grads.append([p.grad.clone() for p in m.parameters() if p.grad is not None])
            if hp["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(m.parameters(), hp["grad_clip"])
            opt.step()
        stacked = [torch.stack([g[j] for g in grads]) for j in range(4)]
        stacked_optimizer_step(params, stacked, state, columns, optimizer)
    for j in range(4):
        want = torch.stack([list(m.parameters())[j].detach() for m in models])
        assert torch.allclose(params[j], want, rtol=1e-5, atol=1e-6), j


def test_groups_must_share_shape_and_schedule_of_evaluations() -> None:
    hps = group("digits-mlp")
    with pytest.raises(ValueError, match="width"):
        train_mlp_fused([hps[0], {**hps[1], "width": 16}], [FakeTrial(), FakeTrial()])
    with pytest.raises(ValueError, match="max_train_steps"):
        train_mlp_fused(hps[:2], [FakeTrial(40), FakeTrial(30)])


def test_fuse_key_groups_trials_that_differ_only_per_trial() -> None:
    info = BUILTINS["digits-mlp"]
    a = fuse_key(info, {"learning_rate": 0.1, "dropout": 0.1, "weight_decay": 0.0})
    b = fuse_key(info, {"learning_rate": 0.3, "dropout": 0.0, "schedule": "cosine"})
    assert a == b and a.startswith("builtin:digits-mlp|")
    assert fuse_key(info, {"width": 64}) != a
    assert fuse_key(info, {"optimizer": "sgd"}) != a
    assert fuse_key(BUILTINS["tiny-lm"], {"dropout": 0.1}) != fuse_key(BUILTINS["tiny-lm"], {})
    for name in BUILTINS.values():
        assert FUSED[name.entry] is fused_train_function(name)


def test_auto_group_size(monkeypatch: pytest.MonkeyPatch) -> None:
    info, hp = BUILTINS["digits-mlp"], dict[str, Any]()
    assert auto_group_size(info, hp, "cpu") == 8
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (80 * 2**30, 80 * 2**30))
    assert auto_group_size(info, hp, "cuda:0") == 1024
    assert 1 <= auto_group_size(BUILTINS["tiny-lm"], {}, "cuda") < 1024
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**20, 80 * 2**30))
    assert auto_group_size(BUILTINS["tiny-lm"], {}, "cuda") == 1


def test_user_workloads_opt_in_with_fused_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_fusable.py").write_text(
        "from engine.workloads.fused import fused_with\n"
        "def train_fused(hps, trials):\n    pass\n"
        "@fused_with(train_fused, group_by=('width',))\n"
        "def train(hp, trial):\n    pass\n"
        "def plain(hp, trial):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_fusable", raising=False)
    info = WorkloadInfo(ref="my_fusable:train", kind="python", entry="my_fusable:train")
    fused = fused_train_function(info)
    assert fused is not None and fused.__name__ == "train_fused"
    assert fuse_key(info, {"width": 8, "lr": 0.1}) == fuse_key(info, {"width": 8, "lr": 0.2})
    assert fuse_key(info, {"width": 8}) != fuse_key(info, {"width": 9})
    plain = WorkloadInfo(ref="my_fusable:plain", kind="python", entry="my_fusable:plain")
    assert fused_train_function(plain) is None
    with pytest.raises(ValueError, match="no fused trainer"):
        fuse_key(plain, {})


# --- through the real trial API ---------------------------------------------------------


@pytest.mark.parametrize("savers", [0, 2])
def test_best_checkpoints_through_the_trial_api_hold_the_weights_of_each_best_step(
    tmp_path: Path, savers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group copies improved rows into one stacked buffer and builds a trial's dict only
    when it is written; what lands in ``best.pt`` must be the weights at that trial's best
    step, for trials that finish and for trials dropped from the stack when it compacts."""
    from engine.runner.checkpoint_writer import CheckpointWriter
    from engine.runner.context import MetricBuffer, StopReason, TrialContext
    from engine.spec import parse_study
    from engine.store import open_store
    from engine.workspace import launch_study

    store = open_store(tmp_path / ".tuneplay")
    spec = parse_study(
        '[study]\nname = "g"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 40\n'
        'eval_every = 10\nbudget = 4\nfuse = 4\n[fixed]\nwidth = 32\n'
        '[nuisance]\nlearning_rate = { low = 1e-3, high = 1e-2, scale = "log" }\n'
    )
    launch_study(store, spec)
    claimed = store.claim_trials("w", "cpu", limit=4, group=True)
    hps = group("digits-mlp", "sgd")
    cancel_at = [20, 10, None, 20]  # three leave: the stack compacts under their pending bests

    class Cancelling(TrialContext):
        def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
            super().checkpoint(step, model, optimizer, **extra)
            if step == cancel_at[contexts.index(self)]:
                self.request_stop(StopReason.CANCEL)

    from engine.runner import checkpoint_writer
    from engine.runner.saver import SaverPool

    monkeypatch.setattr(checkpoint_writer, "POOL_MIN_JOBS", 2)  # a group of 4 goes to the savers
    pool = SaverPool(savers, tmp_path / "cp")
    writer, shared = CheckpointWriter(store, pool), MetricBuffer()
    contexts = [
        Cancelling(store, t, "val_error", "min", 10, tmp_path / "cp" / str(t.id), "cpu", writer, shared)
        for t in claimed
    ]
    train_mlp_fused(hps, contexts)
    with writer.together():  # as the worker hands a group's results over: one batch
        for ctx in contexts:
            ctx.flush()
            ctx.persist_best()
    writer.drain()
    pool.close()
    assert not pool.broken and (pool.files_written >= 4 if savers else pool.files_written == 0)
    reference = [FakeTrial(seed=c.seed, stop_after_checkpoint=s) for c, s in zip(contexts, cancel_at)]
    train_mlp_fused(hps, reference)
    for ctx, ref in zip(contexts, reference):
        evals = [(m["val_error"], step) for step, m in ref.reports if "val_error" in m]
        best_value, best_step = min(evals, key=lambda e: (e[0], e[1]))
        assert (ctx.best_step, ctx.best_value) == (best_step, pytest.approx(best_value))
        saved = torch.load(ctx.attempt_dir() / "best.pt", weights_only=True)
        assert saved["step"] == best_step
        for key, value in ref.checkpoints[best_step]["model"].items():
            torch.testing.assert_close(saved["model"][key], value, rtol=1e-5, atol=1e-6)
        recorded = {c.kind: c for c in store.get_checkpoints(ctx.trial_id)}
        assert recorded["best"].step == best_step
    assert [ref.steps()[-1] for ref in reference] == [20, 10, 39, 20]


def test_reinitialized_weights_are_what_building_each_trial_draws() -> None:
    from engine.workloads.digits import build_cnn, build_mlp
    from engine.workloads.fused_digits import _structure
    from engine.workloads.fused_parts import reinitialized

    cases = [
        (build_mlp, [{"width": 16, "depth": 2, "activation": "relu", "dropout": d} for d in (0.0, 0.3, 0.0, 0.1)]),
        (build_cnn, [{"channels": 4, "depth": 3, "activation": "gelu", "dropout": d} for d in (0.2, 0.0, 0.2)]),
    ]
    for build, model_hps in cases:
        seeds = [7 * k + 3 for k in range(len(model_hps))]
        modules, tensors = reinitialized(build, model_hps, seeds, _structure)
        assert len({id(m) for m in modules}) == 2  # one module per structure, not per trial
        for hp, seed, module, got in zip(model_hps, seeds, modules, tensors):
            got = [t.clone() for t in got]  # the next trial reuses the module
            torch.manual_seed(seed)
            want = build(**hp)
            assert list(module.state_dict()) == list(want.state_dict())
            assert len(got) == len(list(want.parameters()))
            for g, w in zip(got, want.parameters()):
                assert torch.equal(g, w)


def test_latest_checkpoints_cut_by_the_savers_resume_alone_as_if_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group paused at step 20 hands its latest checkpoints (weights and optimizer state)
    over as rows of a host snapshot; saver processes cut and save them; each trial then
    resumes *unfused* from its file and ends where the uninterrupted run ends."""
    from engine.runner import checkpoint_writer
    from engine.runner.checkpoint_writer import CheckpointWriter
    from engine.runner.context import MetricBuffer, StopReason, TrialContext
    from engine.runner.saver import SaverPool
    from engine.spec import parse_study
    from engine.store import open_store
    from engine.workspace import launch_study

    monkeypatch.setattr(checkpoint_writer, "POOL_MIN_JOBS", 2)
    store = open_store(tmp_path / ".tuneplay")
    launch_study(store, parse_study(
        '[study]\nname = "g"\nworkload = "builtin:digits-mlp"\nmax_train_steps = 40\n'
        'eval_every = 10\nbudget = 4\nfuse = 4\n[fixed]\nwidth = 32\n'
        '[nuisance]\nlearning_rate = { low = 1e-3, high = 1e-2, scale = "log" }\n'
    ))
    claimed = store.claim_trials("w", "cpu", limit=4, group=True)
    hps = group("digits-mlp", "adamw")

    class Pausing(TrialContext):
        def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
            if step == 20:
                self.request_stop(StopReason.PAUSE)  # the engine stopping: save and leave
            super().checkpoint(step, model, optimizer, **extra)

    pool = SaverPool(2, tmp_path / "cp")
    writer = CheckpointWriter(store, pool)

    def contexts(cls: type[TrialContext]) -> list[TrialContext]:
        shared = MetricBuffer()
        return [cls(store, t, "val_error", "min", 10, tmp_path / "cp" / str(t.id), "cpu", writer, shared)
                for t in claimed]

    with writer.together():  # one batch: the savers take it
        paused = contexts(Pausing)
        train_mlp_fused(hps, paused)
        for ctx in paused:
            ctx.flush()
    writer.drain()
    assert pool.files_written == 8 and not pool.broken  # 4 latest and 4 best, all by the savers
    saved = torch.load(tmp_path / "cp" / str(claimed[1].id) / f"a{claimed[1].attempt}" / "latest.pt", weights_only=True)
    assert saved["step"] == 20 and saved["optimizer"]["state"][0]["step"].item() == 21.0
    assert set(saved["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    from engine.store.base import TrialState

    store.set_state([t.id for t in claimed], TrialState.QUEUED, only_from=[TrialState.RUNNING])
    claimed = store.claim_trials("w", "cpu", limit=4, group=True)  # attempt 2, as after a restart
    resumed = contexts(TrialContext)
    for hp, ctx in zip(hps, resumed):
        train_mlp(hp, ctx)  # alone, from latest.pt
        ctx.flush()
    pool.close()
    reference = [FakeTrial(seed=t.seed) for t in claimed]
    train_mlp_fused(hps, reference)
    for ctx, ref in zip(resumed, reference):
        assert ctx.resumed_from == 21
        rows = store.read_metrics(trial_ids=[ctx.trial_id], names=["val_loss"])
        got = {r.step: r.value for r in rows}
        assert sorted(got) == [0, 10, 20, 30, 39]
        for step, metrics in ref.reports:
            assert got[step] == pytest.approx(metrics["val_loss"], rel=1e-4, abs=1e-6), step


def test_auto_group_size_probes_a_user_workload_without_a_memory_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.workloads import fused as fused_module

    (tmp_path / "probed.py").write_text(
        "from engine.workloads.fused import fused_with\n"
        "CALLS = []\n"
        "def train_fused(hps, trials):\n"
        "    CALLS.append((len(hps), trials[0].max_train_steps, trials[0].eval_every, hps[0]['width']))\n"
        "    for step in range(trials[0].max_train_steps):\n"
        "        for t in trials:\n"
        "            t.report(step, loss=1.0)\n"
        "            t.checkpoint(step)\n"
        "@fused_with(train_fused, group_by=('width',))\n"
        "def train(hp, trial):\n    pass\n"
        "def broken_fused(hps, trials):\n    raise RuntimeError('CUDA out of memory')\n"
        "@fused_with(broken_fused)\n"
        "def broken(hp, trial):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "probed", raising=False)
    monkeypatch.setattr(fused_module, "_PROBED", {})
    measured: list[int] = []

    def peak(run: Any, device: str) -> int:  # what torch.cuda.max_memory_allocated would say
        before = len(sys.modules["probed"].CALLS)
        run()
        k = sys.modules["probed"].CALLS[before][0]
        measured.append(k)
        return 40 * 2**20 + k * 3 * 2**20

    monkeypatch.setattr(fused_module, "_peak_cuda_bytes", peak)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2 * 2**30, 80 * 2**30))
    info = WorkloadInfo(ref="probed:train", kind="python", entry="probed:train")
    k = auto_group_size(info, {"width": 64}, "cuda")
    assert measured == [2, 6]  # one run per probe size, each a few steps with an evaluation
    assert sys.modules["probed"].CALLS == [(2, 3, 3, 64), (6, 3, 3, 64)]
    assert k == int((0.7 * 2 * 2**30 - 40 * 2**20) // (3 * 2**20)) == 464  # fixed part and slope
    assert auto_group_size(info, {"width": 64}, "cuda") == k and measured == [2, 6]  # cached
    broken = WorkloadInfo(ref="probed:broken", kind="python", entry="probed:broken")
    assert auto_group_size(broken, {}, "cuda") == 5  # 0.7 x 2 GiB / the 256 MiB fallback
