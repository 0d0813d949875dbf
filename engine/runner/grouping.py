"""Which queued trials may train fused in one worker, and how many at once.

A trial's ``group_key`` is empty (never fused) or ``"<K>|<digest>"``: trials with the same key
share every shape-determining hyperparameter (and the rest a fused trainer needs equal), so
one worker can train up to K of them as one computation. ``K`` is the study's ``fuse``
setting: a number, or ``auto`` (the worker picks from its device).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from engine.spec import StudySpec
from engine.store.base import NewTrial
from engine.workloads.command import CommandWorkload

# Built-in workloads with a fused trainer (engine.workloads.fused.FUSED), and what must be
# equal within a group besides their shape keys.
FUSABLE: dict[str, tuple[str, ...]] = {
    "builtin:digits-mlp": ("optimizer", "activation"),
    "builtin:digits-cnn": ("optimizer", "activation"),
    "builtin:tiny-lm": ("optimizer", "activation", "dropout"),
}
CPU_AUTO_GROUP = 8


def group_key(spec: StudySpec, base_config: Mapping[str, Any], params: Mapping[str, Any], max_train_steps: int) -> str:
    """The fusion group of one trial ("" when it must run alone)."""
    if (spec.fuse == "off" or spec.fuse == 1 or isinstance(spec.workload, CommandWorkload)
            or spec.gpus_per_trial > 1):
        return ""
    from engine.workloads.registry import WorkloadError, resolve_workload

    try:
        info = resolve_workload(spec.workload, base_dir=spec.workload_dir or None)
    except WorkloadError:
        return ""
    if spec.workload_ref not in FUSABLE and not info.fusable:
        return ""
    hp = {**info.defaults(), **base_config, **params}
    if spec.workload_ref in FUSABLE:
        keys: tuple[str, ...] = (*info.shape_keys, *FUSABLE[spec.workload_ref])
    elif info.fuse_keys is not None:
        keys = info.fuse_keys
    else:  # a user workload that names nothing: every value that is not a float must match
        keys = tuple(k for k, v in hp.items() if not isinstance(v, float))
    equal = {k: hp.get(k) for k in keys}
    blob = json.dumps([spec.workload_ref, max_train_steps, spec.eval_every, equal], sort_keys=True, default=str)
    return f"{spec.fuse}|{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def with_group_keys(spec: StudySpec, base_config: Mapping[str, Any], trials: Sequence[NewTrial]) -> list[NewTrial]:
    from dataclasses import replace

    return [replace(t, group_key=group_key(spec, base_config, t.params, t.max_train_steps or spec.max_train_steps))
            for t in trials]


def group_size(key: str | None, device: str, auto: int | None = None) -> int:
    """How many trials with this key one worker should claim at once."""
    if not key:
        return 1
    size = key.split("|", 1)[0]
    if size == "auto":
        return auto if auto else (CPU_AUTO_GROUP if device == "cpu" else 128)
    return max(1, int(size)) if size.isdigit() else 1
