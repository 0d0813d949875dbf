"""Fused training: K trials of one shape trained as ONE computation on one device.

Most tuning trials are small; one trial alone leaves a GPU idle between kernel launches.
A fused trainer stacks K trials' weights on a leading dimension and runs every kernel once
for all of them, while each trial keeps everything that is its own: its learning rate and
schedule, optimizer hyperparameters, weight decay, dropout, label smoothing, grad clip,
seed (its own initial weights and data order), its reports, checkpoints and ending.

The engine's side
-----------------
``FUSED[entry]`` is the fused counterpart of an unfused train function, called as
``fused(hps, trials)`` with one hyperparameter dict and one trial context per trial (the
same ``TrialContext`` API the unfused function gets). Trials that may share a group have
equal :func:`fuse_key`; they must also share ``max_train_steps``, ``eval_every`` and
``device`` (asserted). :func:`auto_group_size` suggests K for a device.

A fused trial reports the same metrics at the same steps as the unfused one, checkpoints
in the same format (a plain module ``state_dict`` and the ``torch.optim`` state of the
class the unfused path uses), so either path resumes the other's checkpoint. A trial that
diverges, is cancelled or paused (``should_stop()``) leaves the group at that step; the
others train on. Trials resumed from different steps run from the earliest; the others
stay frozen (no update, no report) until the group reaches their own start step.

Opting in a user workload
-------------------------
Attach a fused function to the train function (``train.fused = train_fused``, or the
:func:`fused_with` decorator), and say which hyperparameters must be equal in a group
(``group_by``; default: every hyperparameter that is not a float)::

    import torch
    from torch.func import functional_call, stack_module_state, vmap
    from engine.workloads.fused import fused_with, stacked_optimizer_step

    def train_fused(hps, trials):
        models = []
        for hp, trial in zip(hps, trials):
            torch.manual_seed(trial.seed)
            models.append(build(hp))
        params, _ = stack_module_state(models)          # {name: (K, *shape)}
        template = build(hps[0]).to("meta")
        def loss_one(p, x, y):
            return torch.nn.functional.cross_entropy(functional_call(template, p, (x,)), y)
        grad_all = vmap(torch.func.grad_and_value(loss_one), randomness="different")
        lr = torch.tensor([hp["learning_rate"] for hp in hps])
        state = {}
        for step in range(trials[0].max_train_steps):
            x, y = batches(step, [t.seed for t in trials])  # (K, B, ...) each
            grads, losses = grad_all(params, x, y)
            names = list(params)
            stacked_optimizer_step([params[n] for n in names], [grads[n] for n in names],
                                   state, {"learning_rate": lr}, optimizer="adamw")
            ...  # trials[k].report(step, train_loss=losses[k].item()) at eval steps

    @fused_with(train_fused, group_by=("width", "depth", "batch_size"))
    def train(hp, trial):
        ...

A user workload that wants per-trial checkpoints and resume can reuse
:class:`engine.workloads.fused_core.FusedTrainer` (implement ``loss`` and ``evaluate``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from engine.workloads.base import QuietTrial, WorkloadInfo
from engine.workloads.fused_digits import train_cnn_fused, train_mlp_fused
from engine.workloads.fused_lm import train_lm_fused
from engine.workloads.fused_optim import stacked_optimizer_step

FusedFunction = Callable[[Sequence[Mapping[str, Any]], Sequence[Any]], None]

FUSED: dict[str, FusedFunction] = {
    "engine.workloads.digits:train_mlp": train_mlp_fused,
    "engine.workloads.digits:train_cnn": train_cnn_fused,
    "engine.workloads.lm:train_lm": train_lm_fused,
}
"""Unfused entry ("module:function") -> its fused trainer."""

# What a built-in's fused trainer needs equal within a group besides its shape keys.
# (The tiny-lm's attention dropout is one probability for the whole group.)
FUSE_EQUAL: dict[str, tuple[str, ...]] = {
    "builtin:digits-mlp": ("activation", "optimizer"),
    "builtin:digits-cnn": ("activation", "optimizer"),
    "builtin:tiny-lm": ("activation", "optimizer", "dropout"),
}

log = logging.getLogger("tuneplay.fused")

MAX_GROUP = 1024
CPU_GROUP = 8  # on a CPU fusion mostly saves Python overhead; keep groups small
MEMORY_FRACTION = 0.7  # of the free GPU memory a group may plan to use


def fused_with(
    fused: FusedFunction, group_by: Sequence[str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare ``fused`` as the fused trainer of the decorated train function.

    Sets ``train.fused = fused`` and, when given, ``train.fuse_keys = tuple(group_by)``:
    the hyperparameters that must be equal for trials to share a group.
    """

    def mark(train: Callable[..., Any]) -> Callable[..., Any]:
        train.fused = fused  # type: ignore[attr-defined]
        if group_by is not None:
            train.fuse_keys = tuple(group_by)  # type: ignore[attr-defined]
        return train

    return mark


def fused_train_function(info: WorkloadInfo) -> FusedFunction | None:
    """The fused trainer of a workload, or None when it has none (it then runs alone)."""
    if info.kind == "command" or not info.entry:
        return None
    if info.entry in FUSED:
        return FUSED[info.entry]
    if info.kind == "builtin":
        return None
    from engine.workloads.registry import load_train_function

    return getattr(load_train_function(info), "fused", None)


def fuse_key(info: WorkloadInfo, hp: Mapping[str, Any]) -> str:
    """Trials with equal keys may train in one fused group.

    The key is ``"<workload ref>|<json of the values that must be equal>"``: for a built-in,
    its shape keys plus :data:`FUSE_EQUAL`; for a user workload, ``train.fuse_keys`` or,
    by default, every hyperparameter whose value is not a float. ``max_train_steps``,
    ``eval_every`` and the device are the engine's to match. Raises ValueError for a
    workload without a fused trainer.
    """
    full = {**info.defaults(), **hp}
    if info.kind == "builtin":
        if info.ref not in FUSE_EQUAL:
            raise ValueError(f"workload {info.ref} has no fused trainer")
        names: Sequence[str] = (*info.shape_keys, *FUSE_EQUAL[info.ref])
    else:
        if fused_train_function(info) is None:
            raise ValueError(f"workload {info.ref} has no fused trainer (train.fused)")
        from engine.workloads.registry import load_train_function

        declared = getattr(load_train_function(info), "fuse_keys", None)
        names = declared if declared is not None else _non_float_names(full)
    equal = {name: full.get(name) for name in sorted(set(names))}
    return f"{info.ref}|{json.dumps(equal, sort_keys=True, default=str)}"


def _non_float_names(hp: Mapping[str, Any]) -> list[str]:
    return [name for name, value in hp.items() if not isinstance(value, float)]


def auto_group_size(info: WorkloadInfo, hp: Mapping[str, Any], device: str) -> int:
    """How many trials of this shape to fuse on ``device``.

    On a CPU, :data:`CPU_GROUP`. On CUDA, what fits in ``MEMORY_FRACTION`` of the free
    memory given one trial's bytes (parameters, gradients, optimizer state, activations)
    and the group's fixed bytes; between 1 and :data:`MAX_GROUP`. The built-ins know theirs;
    a user workload may set ``train.fused_trial_bytes = f(hp) -> int``, and otherwise a
    short probe measures them (:func:`probe_trial_bytes`).
    """
    if not str(device).startswith("cuda"):
        return CPU_GROUP
    per_trial, fixed = _trial_bytes(info, {**info.defaults(), **hp}, device)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    budget = MEMORY_FRACTION * free - fixed
    return int(max(1, min(MAX_GROUP, budget // max(1, per_trial))))


def _trial_bytes(info: WorkloadInfo, hp: Mapping[str, Any], device: str) -> tuple[int, int]:
    """(bytes per trial, bytes per group) on the device, roughly and on the safe side."""
    from engine.workloads import fused_digits, fused_lm

    if info.ref == "builtin:digits-mlp":
        return fused_digits.mlp_trial_bytes(hp)
    if info.ref == "builtin:digits-cnn":
        return fused_digits.cnn_trial_bytes(hp)
    if info.ref == "builtin:tiny-lm":
        return fused_lm.lm_trial_bytes(hp)
    estimate = None
    if info.kind == "python":
        from engine.workloads.registry import load_train_function

        estimate = getattr(load_train_function(info), "fused_trial_bytes", None)
    if estimate:
        return int(estimate(hp)), 0
    try:
        return probe_trial_bytes(info, hp, device)
    except Exception:  # the probe is a guess's refinement: a workload bug shows in its trials
        log.exception("memory probe of %s failed; assuming %d MiB a trial", info.ref, FALLBACK_BYTES >> 20)
        return FALLBACK_BYTES, 0


PROBE_SIZES = (2, 6)  # groups the probe runs; the growth of peak memory between them is per trial
PROBE_STEPS = 3
FALLBACK_BYTES = 256 * 2**20
_PROBED: dict[tuple[str, str], tuple[int, int]] = {}


def probe_trial_bytes(
    info: WorkloadInfo,
    hp: Mapping[str, Any],
    device: str,
    peak_bytes: Callable[[Callable[[], None], str], int] | None = None,
) -> tuple[int, int]:
    """(bytes per trial, bytes per group) of a fused workload on ``device``, measured: its
    fused trainer runs :data:`PROBE_STEPS` steps with an evaluation for groups of each of
    :data:`PROBE_SIZES`, and the peak device memory of each run gives the per-trial slope
    and the fixed part. Once per workload, group shape and device in a worker."""
    key = (fuse_key(info, hp), str(device))
    if key in _PROBED:
        return _PROBED[key]
    fused = fused_train_function(info)
    if fused is None:
        raise ValueError(f"workload {info.ref} has no fused trainer")
    full = {**info.defaults(), **hp}
    measure = peak_bytes or _peak_cuda_bytes

    def run(k: int) -> None:  # a few steps, an evaluation included
        fused([dict(full) for _ in range(k)], [QuietTrial(PROBE_STEPS, PROBE_STEPS, i, device) for i in range(k)])

    peaks = [measure(functools.partial(run, k), device) for k in PROBE_SIZES]
    (small, large), (low, high) = PROBE_SIZES, peaks
    per_trial = max(1, (high - low) // (large - small))
    fixed = max(0, low - small * per_trial)
    _PROBED[key] = (per_trial, fixed)
    log.info("memory probe of %s on %s: %d MiB a trial, %d MiB a group",
             info.ref, device, per_trial >> 20, fixed >> 20)
    return per_trial, fixed


def _peak_cuda_bytes(run: Callable[[], None], device: str) -> int:
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    run()
    torch.cuda.synchronize(dev)
    return int(torch.cuda.max_memory_allocated(dev) - base)


__all__ = [
    "FUSED",
    "FUSE_EQUAL",
    "auto_group_size",
    "fuse_key",
    "fused_train_function",
    "fused_with",
    "probe_trial_bytes",
    "stacked_optimizer_step",
    "train_cnn_fused",
    "train_lm_fused",
    "train_mlp_fused",
]
