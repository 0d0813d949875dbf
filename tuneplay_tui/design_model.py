"""The study being designed on screen 2: hyperparameters by role, settings, and its TOML.

Plain Python (no Textual): the design screen edits a :class:`DesignModel`, renders it as a
study file with :meth:`DesignModel.to_toml`, and the engine validates that text, so the
file saved under ``studies/`` is exactly what was checked and previewed.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("fixed", "nuisance", "scientific")
SCALES = ("linear", "log", "int", "int_log", "categorical")
SETTINGS = ("name", "workload", "experiment", "goal", "metric", "mode", "max_train_steps",
            "eval_every", "budget", "search", "seed", "scientific_mode")
RULE_OF_THUMB = 10  # trials per nuisance dimension per scientific value, for exploration


class DesignError(ValueError):
    """A value typed into the design table that cannot be used (one line)."""


@dataclass
class HpRow:
    """One hyperparameter: its role, the fixed value, and its search range or choices."""

    name: str
    role: str = "fixed"
    value: Any = None
    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    values: tuple[Any, ...] = ()
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """What the table shows in the "range / value" column."""
        from tuneplay_tui.format import value as fv

        if self.role == "fixed":
            return fv(self.value)
        if self.scale == "categorical":
            return "{" + ", ".join(fv(v) for v in self.values) + "}"
        return f"{fv(self.low)} .. {fv(self.high)}"


@dataclass
class DesignModel:
    """Settings of the ``[study]`` table plus one :class:`HpRow` per hyperparameter."""

    study: dict[str, Any] = field(default_factory=dict)
    rows: list[HpRow] = field(default_factory=list)

    # ------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, design: Mapping[str, Any], info: Any = None,
                  add_missing: bool = True) -> DesignModel:
        """From a study-file-shaped dict (``study``, ``fixed``, ``nuisance``, ``scientific``).

        ``info`` (the workload's metadata) gives each row its help and choices; with
        ``add_missing`` the workload's other hyperparameters join as fixed rows at their
        defaults (a baseline's design). An opened study file keeps only its own rows: the
        rest come from its experiment's baseline when it launches, not from defaults."""
        model = cls(study=dict(design.get("study", {})))
        hps = getattr(info, "hyperparameters", None) or {}
        seen: set[str] = set()
        for role in ("scientific", "nuisance"):
            for name, body in dict(design.get(role, {})).items():
                model.rows.append(_row_from_body(name, role, body, hps.get(name)))
                seen.add(name)
        for name, v in dict(design.get("fixed", {})).items():
            model.rows.append(_row(name, "fixed", v, hps.get(name)))
            seen.add(name)
        for name, hp in hps.items() if add_missing else ():
            if name not in seen:
                model.rows.append(_row(name, "fixed", hp.default, hp))
        return model

    @classmethod
    def from_text(cls, text: str, info: Any = None, add_missing: bool = True) -> DesignModel:
        """From study TOML (raises DesignError on invalid TOML)."""
        return cls.from_dict(_load_toml(text), info, add_missing)

    @staticmethod
    def workload_of(text: str) -> str | None:
        """The ``[study] workload`` a study file names as one string (None for a command
        table or when it names none; raises DesignError on invalid TOML)."""
        workload = _load_toml(text).get("study", {}).get("workload")
        return workload if isinstance(workload, str) else None

    def row(self, name: str) -> HpRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise DesignError(f"no hyperparameter {name!r}")

    # ------------------------------------------------------------- editing
    def set_role(self, name: str, role: str) -> None:
        r = self.row(name)
        if role == r.role:
            return
        if role == "fixed":
            r.role = "fixed"
            return
        per_value = self.study.get("scientific_mode", "per_value") == "per_value"
        if role == "scientific" and per_value:
            _to_categorical(r, compare=True)
        elif r.role == "fixed" and r.scale != "categorical" and r.low is None:
            _default_range(r)
        r.role = role

    def cycle_role(self, name: str) -> str:
        r = self.row(name)
        self.set_role(name, ROLES[(ROLES.index(r.role) + 1) % len(ROLES)])
        return r.role

    def cycle_scale(self, name: str) -> str:
        r = self.row(name)
        if r.role == "fixed":
            raise DesignError(f"{name} is fixed: make it nuisance or scientific to give it a scale")
        options = _scales_for(r)
        r.scale = options[(options.index(r.scale) + 1) % len(options)] if r.scale in options else options[0]
        if r.scale == "categorical" and not r.values:
            _to_categorical(r)
        elif r.scale != "categorical" and r.low is None:
            _default_range(r)
        if r.scale in ("int", "int_log") and r.low is not None and r.high is not None:
            r.low, r.high = math.floor(r.low), math.ceil(r.high)
        return r.scale

    def set_text(self, name: str, text: str) -> None:
        """Apply what was typed: a fixed value, ``low .. high`` or ``a, b, c`` choices."""
        r = self.row(name)
        text = text.strip()
        if not text:
            raise DesignError(f"{name}: empty value")
        if r.role == "fixed":
            r.value = parse_scalar(text)
            return
        if ".." in text:
            parts = [p for p in re.split(r"\s*\.\.\s*", text.strip("[] ")) if p]
            if len(parts) != 2:
                raise DesignError(f"{name}: write a range as 'low .. high', got {text!r}")
            r.low, r.high = (parse_number(name, p) for p in parts)
            if r.scale == "categorical":
                wide = r.low > 0 and r.high / r.low >= 100
                r.scale = "log" if wide else "linear"
            return
        parts = [p for p in re.split(r"\s*,\s*", text.strip("{} ")) if p]
        if len(parts) < 2:
            raise DesignError(f"{name}: write a range as 'low .. high' or choices as 'a, b'")
        values = tuple(parse_scalar(p) for p in parts)
        if len(set(map(repr, values))) != len(values):
            raise DesignError(f"{name}: values repeat in {text!r}")
        r.values, r.scale = values, "categorical"

    def set_setting(self, key: str, text: str) -> None:
        if key not in SETTINGS:
            raise DesignError(f"unknown study setting {key!r}")
        self.study[key] = parse_scalar(text) if key not in ("name", "goal", "workload") else text

    def bump_budget(self, direction: int) -> int:
        unit = self.combos() * 4
        budget = int(self.study.get("budget", unit))
        self.study["budget"] = max(self.combos(), budget + direction * unit)
        return self.study["budget"]

    def toggle_search(self) -> str:
        current = self.study.get("search", "quasi_random")
        self.study["search"] = "bayesian" if current == "quasi_random" else "quasi_random"
        return self.study["search"]

    # ------------------------------------------------------------- reading
    def by_role(self, role: str) -> list[HpRow]:
        return [r for r in self.rows if r.role == role]

    def combos(self) -> int:
        if self.study.get("scientific_mode", "per_value") != "per_value":
            return 1
        return math.prod(max(len(r.values), 1) for r in self.by_role("scientific"))

    def allocation_hint(self, compact: bool = False) -> str:
        """How the budget splits over scientific values and nuisance dimensions."""
        budget = int(self.study.get("budget", 0) or 0)
        combos, dims = self.combos(), len(self.by_role("nuisance"))
        points = budget // combos if combos else budget
        head = (f"{points * combos} trials = {points} points × {combos} scientific values"
                if combos > 1 else f"{budget} trials")
        if budget % combos:
            head += f" (budget {budget} rounds down)"
        if not dims:
            return head + " · no nuisance dimensions: every point is one config"
        want = RULE_OF_THUMB * dims * combos
        per = points / dims
        if compact:
            verdict = "enough to explore" if budget >= want else f"thin (≥{RULE_OF_THUMB}/dim: {want})"
            return f"{head} · {per:.1f} points/nuisance dim · {verdict}"
        verdict = ("enough to explore" if budget >= want
                   else f"thin: exploring wants ≥ {RULE_OF_THUMB}/dim, budget ≈ {want}")
        return f"{head} · {per:.1f} points per nuisance dim ({dims}) · {verdict}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"study": {k: self.study[k] for k in SETTINGS
                                         if self.study.get(k) not in (None, "")}}
        out["fixed"] = {r.name: r.value for r in self.by_role("fixed") if r.value is not None}
        for role in ("nuisance", "scientific"):
            out[role] = {r.name: _body(r) for r in self.by_role(role)}
        return out

    def to_toml(self) -> str:
        """The study file for this design (round-trips through :meth:`from_text`)."""
        d = self.to_dict()
        lines = ["[study]"]
        for k, v in d["study"].items():
            lines.append(f"{k} = {_toml_value(v)}")
        for table in ("fixed", "nuisance", "scientific"):
            if d[table]:
                lines.append(f"[{table}]")
                lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in d[table].items()]
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- helpers
def _load_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DesignError(f"invalid TOML: {exc}") from None


def parse_scalar(text: str) -> Any:
    """``true`` -> True, ``64`` -> 64, ``1e-3`` -> 0.001, otherwise the text itself."""
    t = text.strip().strip("\"'")
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return t
    if not math.isfinite(v):
        raise DesignError(f"{text!r} is not a finite number")
    return v


def parse_number(name: str, text: str) -> float:
    v = parse_scalar(text)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DesignError(f"{name}: {text.strip()!r} is not a number")
    return v


def _row(name: str, role: str, value: Any, hp: Any) -> HpRow:
    return HpRow(name, role, value, help=getattr(hp, "help", ""),
                 choices=getattr(hp, "choices", None))


def _row_from_body(name: str, role: str, body: Mapping[str, Any], hp: Any) -> HpRow:
    default = getattr(hp, "default", None)
    r = _row(name, role, default, hp)
    if "values" in body:
        r.values, r.scale = tuple(body["values"]), "categorical"
        r.value = default if default is not None else r.values[0]
    else:
        r.low, r.high, r.scale = body.get("low"), body.get("high"), body.get("scale", "linear")
        if r.value is None and r.low is not None:
            r.value = r.low
    return r


def _scales_for(r: HpRow) -> tuple[str, ...]:
    if isinstance(r.value, (bool, str)) or r.choices:
        return ("categorical",)
    return SCALES


def _default_range(r: HpRow) -> None:
    """A first range around the fixed value: x/÷10 on a log scale, int halves/doubles."""
    v = r.value
    if isinstance(v, (bool, str)) or r.choices or v is None:
        _to_categorical(r)
    elif isinstance(v, int):
        r.low, r.high, r.scale = max(1, v // 2), max(2, v * 2), "int_log" if v >= 2 else "int"
    elif v > 0:
        r.low, r.high, r.scale = v / 10, v * 10, "log"
        if r.high > 1 and v < 1 and "1)" in r.help:  # bounded in [0, 1): stay inside
            r.low, r.high, r.scale = max(0.0, v - 0.1), min(0.999, v + 0.09), "linear"
    else:
        r.low, r.high, r.scale = 1e-6, 1e-2, "log"


def _to_categorical(r: HpRow, compare: bool = False) -> None:
    """Choices for a categorical role: all of a choice hyperparameter's options (nuisance),
    or the current value against one alternative (``compare``: a scientific question)."""
    if r.values and not (compare and r.value is not None and r.value not in r.values):
        r.scale = "categorical"
        return
    v = r.value
    if r.choices:
        others = [c for c in r.choices if c != v]
        r.values = (v, *others[:1]) if compare and v is not None else tuple(r.choices)
    elif isinstance(v, bool):
        r.values = (v, not v)
    elif isinstance(v, int):
        r.values = (v, v * 2 if v else 1)
    elif isinstance(v, float):
        r.values = (v, v * 10 if v else 1e-4)
    elif r.low is not None and r.high is not None:
        r.values = (r.low, r.high)
    else:
        r.values = (v,)
    r.scale = "categorical"


def _body(r: HpRow) -> dict[str, Any]:
    if r.scale == "categorical":
        return {"values": list(r.values)}
    return {"low": r.low, "high": r.high, "scale": r.scale}


def _key(name: str) -> str:
    return name if re.match(r"^[A-Za-z0-9_-]+$", name) else json.dumps(name)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return '""'
    return json.dumps(str(v))
