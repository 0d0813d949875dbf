"""What the engine knows about a workload without importing it (no torch here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.kinds import Mode


@dataclass(frozen=True)
class HParamInfo:
    """One hyperparameter a workload accepts, with its default and what values make sense."""

    name: str
    default: Any
    kind: str = "float"  # "float" | "int" | "choice" | "bool"
    choices: tuple[Any, ...] | None = None
    help: str = ""
    low: float | None = None  # hard bounds a value must respect (e.g. dropout in [0, 1))
    high: float | None = None


@dataclass(frozen=True)
class WorkloadInfo:
    """A resolved workload reference.

    ``hyperparameters`` is None when the workload accepts any name (a command workload or a
    Python entry point that declares nothing).
    """

    ref: str  # as written in the study file, e.g. "builtin:digits-mlp"
    kind: str  # "builtin" | "python" | "command"
    entry: str = ""  # "package.module:function" for builtin and python workloads
    command: tuple[str, ...] = ()
    hyperparameters: Mapping[str, HParamInfo] | None = None
    metrics: tuple[str, ...] = ()
    chance: Mapping[str, float] = field(default_factory=dict)  # metric -> value at chance
    description: str = ""
    shape_keys: tuple[str, ...] = ()  # hyperparameters that change tensor shapes (fusion)
    default_metric: str = "val_error"
    default_mode: Mode = Mode.MIN
    fusable: bool = False  # a fused trainer exists (built-in, or @fused_with on a Python entry)
    fuse_keys: tuple[str, ...] | None = None  # must be equal within a fused group (None: non-floats)
    source_dir: str = ""  # the sys.path entry a Python entry point was found under

    def defaults(self) -> dict[str, Any]:
        if not self.hyperparameters:
            return {}
        return {name: info.default for name, info in self.hyperparameters.items()}


class QuietTrial:
    """The trial API with nothing behind it: no reports kept, nothing saved or restored,
    never told to stop. For runs the engine makes for itself (probes), not trials."""

    def __init__(self, max_train_steps: int, eval_every: int, seed: int = 0, device: str = "cpu") -> None:
        self.max_train_steps, self.eval_every = max_train_steps, eval_every
        self.seed, self.device, self.trial_id = seed, device, -1
        self.gpus = 1 if device.startswith("cuda") else 0
        self.params: dict[str, Any] = {}

    def report(self, step: int, **metrics: float) -> None:
        pass

    def checkpoint(self, step: int, model: Any = None, optimizer: Any = None, **extra: Any) -> None:
        pass

    def restore(self, model: Any = None, optimizer: Any = None, **extra: Any) -> int:
        return 0

    def should_stop(self) -> bool:
        return False
