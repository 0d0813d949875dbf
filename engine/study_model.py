"""The study model: :class:`StudySpec` (a validated study), its stored JSON form, and
:class:`StoredStudy` (a study as the store keeps it). Parsing study files is ``engine.spec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import TuneplayError
from engine.kinds import Mode, Search, TrialKind
from engine.space import ChoiceParam, Param, RangeParam, Scalar
from engine.workloads.command import CommandWorkload


class SpecError(TuneplayError, ValueError):
    """A study file problem, rendered as ``FILE:LINE: key: reason``."""

    def __init__(self, path: str, key: str, reason: str, line: int | None = None) -> None:
        self.path, self.key, self.reason, self.line = path, key, reason, line
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


@dataclass(frozen=True)
class StudySpec:
    """A validated study: the question, its hyperparameters by role, and its protocol."""

    name: str
    workload: str | CommandWorkload  # "builtin:x", "pkg.mod:fn", or a command
    metric: str
    mode: Mode
    max_train_steps: int
    eval_every: int
    budget: int
    search: Search = Search.QUASI_RANDOM
    seed: int = 0
    goal: str = ""
    experiment: str = ""
    scientific_mode: str = "per_value"
    fuse: str | int = "auto"
    target: float | None = None  # a metric value to reach (batch-size scaling studies)
    gpus_per_trial: int = 1  # a slot of this many GPUs on one host runs each trial
    workload_dir: str = ""  # where a Python entry point imports from (the study file's folder)
    fixed: Mapping[str, Scalar] = field(default_factory=dict)
    nuisance: tuple[Param, ...] = ()
    scientific: tuple[Param, ...] = ()
    source: str = ""

    @property
    def workload_ref(self) -> str:
        """A one-string name for the workload (commands are shown as their argv joined)."""
        if isinstance(self.workload, CommandWorkload):
            return self.workload.ref
        return self.workload

    @property
    def searched(self) -> tuple[Param, ...]:
        """Scientific then nuisance parameters: every dimension that varies across trials."""
        return self.scientific + self.nuisance

    def param(self, name: str) -> Param | None:
        for p in self.searched:
            if p.name == name:
                return p
        return None

    def role_of(self, name: str) -> str | None:
        if any(p.name == name for p in self.scientific):
            return "scientific"
        if any(p.name == name for p in self.nuisance):
            return "nuisance"
        return "fixed" if name in self.fixed else None

    @property
    def hyperparameter_names(self) -> list[str]:
        return [p.name for p in self.searched] + list(self.fixed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, stored with the study; :func:`spec_from_dict` reverses it."""
        return {
            "name": self.name,
            "workload": self.workload.to_dict() if isinstance(self.workload, CommandWorkload) else self.workload,
            "metric": self.metric, "mode": self.mode,
            "max_train_steps": self.max_train_steps, "eval_every": self.eval_every,
            "budget": self.budget, "search": self.search, "seed": self.seed, "goal": self.goal,
            "experiment": self.experiment, "scientific_mode": self.scientific_mode,
            "fuse": self.fuse, "target": self.target, "gpus_per_trial": self.gpus_per_trial,
            "workload_dir": self.workload_dir,
            "fixed": dict(self.fixed),
            "nuisance": [_param_to_dict(p) for p in self.nuisance],
            "scientific": [_param_to_dict(p) for p in self.scientific],
            "source": self.source,
        }

    def protocol(self) -> str:
        """The tuning protocol in one paragraph: what any comparison from this study rests on."""
        parts = [f"{p.name} {p.describe()}" for p in self.nuisance]
        sci = [f"{p.name} {p.describe()}" for p in self.scientific]
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items()) or "none"
        return (
            f"study {self.name!r} on {self.workload_ref}: {self.search} search, budget {self.budget}, "
            f"seed {self.seed}, max_train_steps {self.max_train_steps}, eval every {self.eval_every}; "
            f"{self.metric} ({self.mode}); scientific: {'; '.join(sci) or 'none'} "
            f"({self.scientific_mode}); nuisance: {'; '.join(parts) or 'none'}; fixed: {fixed}"
        )


def _param_to_dict(p: Param) -> dict[str, Any]:
    if isinstance(p, ChoiceParam):
        return {"name": p.name, "values": list(p.values)}
    return {"name": p.name, "low": p.low, "high": p.high, "scale": p.scale}


def _param_from_dict(d: Mapping[str, Any]) -> Param:
    if "values" in d:
        return ChoiceParam(d["name"], tuple(d["values"]))
    return RangeParam(d["name"], d["low"], d["high"], d.get("scale", "linear"))


def spec_from_dict(d: Mapping[str, Any]) -> StudySpec:
    """Rebuild a spec stored by :meth:`StudySpec.to_dict` (already validated)."""
    workload = d["workload"]
    return StudySpec(
        name=d["name"],
        workload=workload if isinstance(workload, str) else CommandWorkload.from_stored(workload),
        metric=d["metric"], mode=Mode(d["mode"]), max_train_steps=d["max_train_steps"],
        eval_every=d["eval_every"], budget=d["budget"], search=Search(d["search"]), seed=d["seed"],
        goal=d.get("goal", ""), experiment=d.get("experiment", ""),
        scientific_mode=d.get("scientific_mode", "per_value"), fuse=d.get("fuse", "auto"),
        target=d.get("target"), gpus_per_trial=d.get("gpus_per_trial", 1),
        workload_dir=d.get("workload_dir", ""),
        fixed=dict(d.get("fixed", {})),
        nuisance=tuple(_param_from_dict(p) for p in d.get("nuisance", [])),
        scientific=tuple(_param_from_dict(p) for p in d.get("scientific", [])),
        source=d.get("source", ""),
    )


@dataclass(frozen=True)
class StoredStudy:
    """A study as the store keeps it (``Study.spec``): the validated spec plus what launching
    it fixed: the baseline configuration its trials start from, the baseline version, and
    whether it is a run of the baseline itself. The one way to read a stored study's keys.
    """

    spec: StudySpec
    base_config: Mapping[str, Scalar] = field(default_factory=dict)
    baseline_version: int | None = None
    kind: TrialKind | None = None  # TrialKind.BASELINE for a run of the baseline itself

    def hyperparameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's full configuration: the baseline's, overridden by the trial's own."""
        return {**self.base_config, **params}

    def to_dict(self) -> dict[str, Any]:
        out = self.spec.to_dict()
        out["base_config"] = dict(self.base_config)
        if self.baseline_version is not None:
            out["baseline_version"] = self.baseline_version
        if self.kind is not None:
            out["kind"] = self.kind.value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoredStudy:
        kind = d.get("kind")
        version = d.get("baseline_version")
        return cls(spec_from_dict(d), dict(d.get("base_config", {})),
                   None if version is None else int(version), TrialKind(kind) if kind else None)


def stored_study(study: Any) -> StoredStudy:
    """The typed form of a stored ``Study``'s spec.

    Raises:
        StoreError: the stored spec lacks a key or holds a value no tuneplay writes (a
            database edited by hand, say); the engine logs it instead of stopping.
    """
    from engine.store.base import StoreError

    try:
        return StoredStudy.from_dict(study.spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"study {study.name!r}: its stored spec is unreadable "
                         f"({type(exc).__name__}: {exc})") from None
