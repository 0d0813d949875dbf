"""Canned, deterministic training curves and study files for the fake engine facade.

A trial's curves are a closed-form function of its hyperparameters, its id and the step
(no random state, no clock), so the fake can hand out any prefix of any curve without
storing millions of rows, and every test run and snapshot sees the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

T0 = 1_700_000_000.0  # 2023-11-14, when the canned experiment was created
NOW = T0 + 3 * 86400.0  # the fake's clock starts here; tick() moves it by TICK_SECONDS
TICK_SECONDS = 10.0
STEPS_PER_SECOND = 2.5
CHANCE = 0.9

WD_STUDY = """\
[study]
name = "wd-vs-none"
workload = "builtin:digits-mlp"
experiment = "digits-mlp"
goal = "Does weight decay help?"
metric = "val_error"
max_train_steps = 400
eval_every = 25
budget = 32
seed = 1
[fixed]
optimizer = "momentum"
batch_size = 64
schedule = "cosine"
[nuisance]
learning_rate = { low = 1e-3, high = 1e-1, scale = "log" }
momentum = { low = 0.8, high = 0.99 }
[scientific]
weight_decay = { values = [0.0, 1e-4] }
"""

LONGER_STUDY = """\
[study]
name = "wd-longer"
workload = "builtin:digits-mlp"
experiment = "digits-mlp"
goal = "Weight decay again, with the learning rate range expanded and longer training"
metric = "val_error"
max_train_steps = 600
eval_every = 25
budget = 24
seed = 2
[fixed]
optimizer = "momentum"
batch_size = 64
schedule = "cosine"
[nuisance]
learning_rate = { low = 1e-3, high = 1.0, scale = "log" }
momentum = { low = 0.8, high = 0.99 }
[scientific]
weight_decay = { values = [0.0, 1e-4] }
"""

BENCH_STUDY = """\
[study]
name = "bench-500"
workload = "builtin:digits-mlp"
experiment = "digits-mlp"
metric = "val_error"
max_train_steps = 100000
eval_every = 1
budget = {budget}
seed = 3
[fixed]
optimizer = "momentum"
batch_size = 64
[nuisance]
learning_rate = {{ low = 1e-3, high = 1e-1, scale = "log" }}
momentum = {{ low = 0.8, high = 0.99 }}
weight_decay = {{ low = 1e-6, high = 1e-3, scale = "log" }}
"""

BASELINE_V1 = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 64}
BASELINE_V2 = {"optimizer": "momentum", "learning_rate": 1e-2, "momentum": 0.9,
               "weight_decay": 0.0, "batch_size": 64, "schedule": "cosine"}

# The throughput probe of the digits MLP on the fake machine (examples/s, bytes, oom).
PROBE_ROWS = [
    {"batch_size": 16, "examples_per_s": 9_100.0, "peak_mem_bytes": 0.21e9, "oom": False},
    {"batch_size": 32, "examples_per_s": 17_400.0, "peak_mem_bytes": 0.24e9, "oom": False},
    {"batch_size": 64, "examples_per_s": 30_800.0, "peak_mem_bytes": 0.31e9, "oom": False},
    {"batch_size": 128, "examples_per_s": 41_900.0, "peak_mem_bytes": 0.45e9, "oom": False},
    {"batch_size": 256, "examples_per_s": 44_700.0, "peak_mem_bytes": 0.74e9, "oom": False},
    {"batch_size": 512, "examples_per_s": None, "peak_mem_bytes": None, "oom": True},
]


def wiggle(trial_id: int, step: np.ndarray | float, salt: float = 0.0) -> np.ndarray:
    """Deterministic noise in [-1, 1] per (trial, step): a hash, not a random generator."""
    x = np.sin(trial_id * 12.9898 + np.asarray(step, dtype=float) * 78.233 + salt) * 43758.5453
    return (x - np.floor(x)) * 2.0 - 1.0


def final_error(params: Mapping[str, Any], seed: int = 0) -> float:
    """Where a configuration's val_error settles (the fake's response surface).

    The optimum learning rate sits near 0.16, above the first study's range [1e-3, 0.1], so
    the boundary check flags its upper edge; weight decay helps a little.
    """
    u = math.log10(float(params.get("learning_rate", 1e-2)))
    m = float(params.get("momentum", 0.9))
    wd = float(params.get("weight_decay", 0.0))
    e = 0.065 + 0.06 * (u + 0.8) ** 2 + 0.01 * ((m - 0.92) / 0.1) ** 2
    e -= 0.006 if wd > 0 else 0.0
    return max(e + 0.002 * float(wiggle(seed % 9973, 0.5)), 0.02)


def effective_lr(params: Mapping[str, Any]) -> float:
    lr = float(params.get("learning_rate", 1e-2))
    return lr / max(1.0 - float(params.get("momentum", 0.9)), 1e-3)


def diverge_step(params: Mapping[str, Any], eval_every: int) -> int | None:
    """The step where a too-hot configuration blows up (None: it trains fine)."""
    eff = effective_lr(params)
    limit = 4.0 if float(params.get("weight_decay", 0.0)) > 0 else 2.0  # decay steadies it
    if eff <= limit:
        return None
    return max(eval_every, int(eval_every * round(120 / eff / eval_every + 1)))


def curve(params: Mapping[str, Any], trial_id: int, steps: np.ndarray, horizon: int,
          seed: int = 0) -> dict[str, np.ndarray]:
    """train_loss, val_loss and val_error of one trial at ``steps``."""
    t = np.asarray(steps, dtype=float)
    e = final_error(params, seed)
    eff = effective_lr(params)
    tau = 40.0 / math.sqrt(max(eff * 10.0, 1e-3)) * (horizon / 400.0) ** 0.3
    frac = t / max(horizon, 1)
    overfit = 0.012 * min(eff, 2.0) * frac ** 2
    val = e + (CHANCE - e) * np.exp(-t / tau) + overfit + 0.0025 * wiggle(trial_id, t)
    train = 2.3 * np.exp(-t / (0.8 * tau)) + 0.25 * e + 0.01 * wiggle(trial_id, t, 1.0)
    return {"train_loss": train, "val_loss": 3.0 * val + 0.05, "val_error": np.clip(val, 0, 1)}


def eval_steps(steps_done: int, eval_every: int, horizon: int) -> np.ndarray:
    """The steps a trial has reported at, up to ``steps_done``."""
    steps = np.arange(eval_every, steps_done + 1, eval_every)
    if steps_done >= horizon and (not len(steps) or steps[-1] != horizon):
        steps = np.append(steps, horizon)
    return steps


def best_so_far(params: Mapping[str, Any], trial_id: int, steps_done: int, eval_every: int,
                horizon: int, seed: int = 0) -> tuple[int | None, float | None]:
    """The best checkpoint (step, val_error) among the evals reported so far."""
    steps = eval_steps(steps_done, eval_every, horizon)
    if not len(steps):
        return None, None
    values = curve(params, trial_id, steps, horizon, seed)["val_error"]
    i = int(np.argmin(values))
    return int(steps[i]), float(values[i])
