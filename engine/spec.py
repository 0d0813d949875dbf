"""Study files (TOML) -> validated, frozen :class:`StudySpec` (``engine.study_model``).

Every user error becomes a :class:`SpecError` whose ``str`` is one line:
``FILE:LINE: key: reason`` (the line where the key is written, when it can be found).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.kinds import Mode, Search
from engine.space import SCALES, ChoiceParam, Param, RangeParam, Scalar

# the model lives in engine.study_model; these names stay importable from here
from engine.study_model import SpecError, StoredStudy, StudySpec, spec_from_dict, stored_study
from engine.workloads.base import WorkloadInfo
from engine.workloads.command import (
    DEFAULT_ARGS,
    CommandConfigError,
    CommandWorkload,
    check_command,
)
from engine.workloads.command import KEYS as COMMAND_KEYS

__all__ = [
    "MAX_BUDGET", "MAX_GPUS_PER_TRIAL", "MAX_STEPS", "ROLES", "SCIENTIFIC_MODES", "SEARCH_METHODS",
    "SpecError", "StoredStudy", "StudySpec", "line_of", "load_study", "parse_study",
    "spec_from_dict", "stored_study",
]

SEARCH_METHODS = tuple(Search)
SCIENTIFIC_MODES = ("per_value", "joint")
ROLES = ("scientific", "nuisance", "fixed")
MAX_BUDGET = 100_000
MAX_STEPS = 10**9
MAX_GPUS_PER_TRIAL = 64


# --------------------------------------------------------------------------- loading

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_STUDY_KEYS = {
    "name", "workload", "goal", "metric", "mode", "max_train_steps", "eval_every", "budget",
    "search", "seed", "scientific_mode", "fuse", "experiment", "target", "gpus_per_trial",
}
_REQUIRED = ("name", "workload", "max_train_steps", "budget")
_TABLES = {"study", "fixed", "nuisance", "scientific"}
_RANGE_KEYS = {"low", "high", "scale"}


class _Lines:
    """Finds the line a key is written on, since tomllib does not report positions."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def of(self, table: str | None, key: str | None = None) -> int | None:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
            found = next((i for i, ln in enumerate(self.lines) if header.match(ln)), None)
            if found is None:
                return None
            if key is None:
                return found + 1
            start = found + 1
        if key is None:
            return None
        pat = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for i in range(start, len(self.lines)):
            if table and i > start and re.match(r"^\s*\[", self.lines[i]):
                break
            if pat.match(self.lines[i]):
                return i + 1
        return None


class _Checker:
    """Carries the file name and line finder so every error names FILE:LINE: key."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = _Lines(text)

    def fail(self, table: str | None, key: str | None, reason: str) -> SpecError:
        line = self.lines.of(table, key) if key else self.lines.of(table)
        if line is None and table:
            line = self.lines.of(table)
        if line is None and table is None and key:
            line = self.lines.of(key)
        dotted = ".".join(x for x in (table, key) if x)
        return SpecError(self.path, dotted, reason, line)


def load_study(path: str | Path, resolve: bool = True) -> StudySpec:
    """Read and validate a study file.

    Args:
        path: the TOML file.
        resolve: also resolve the workload and check hyperparameters against it.

    Raises:
        SpecError: with a one-line ``FILE:LINE: key: reason`` message.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), "", "no such file") from None
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    return parse_study(_decode(data, str(path)), str(path), resolve=resolve)


def _decode(data: bytes, path: str) -> str:
    """UTF-8 text; a byte-order mark (as some editors save) is dropped, and anything else
    is named by its line and column, not by a byte offset."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise SpecError(path, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}; "
                        "save the file as UTF-8", line) from None


def line_of(path: str, dotted_key: str) -> int | None:
    """The line ``dotted_key`` (``study.experiment``) is written on in the file, or its
    table's header when the key is not written (a default was used)."""
    try:
        text = _decode(Path(path).read_bytes(), path)
    except (OSError, SpecError):
        return None
    table, _, key = dotted_key.rpartition(".")
    lines = _Lines(text)
    return lines.of(table or None, key) or (lines.of(table) if table else None)


def parse_study(text: str, path: str = "<study>", resolve: bool = True) -> StudySpec:
    """Validate study TOML ``text`` (``path`` is used in messages and to resolve workloads)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else None
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise SpecError(path, "toml", f"invalid TOML: {reason}", line) from None
    ck = _Checker(path, text)
    _check_finite(ck, data)
    for table in data:
        if table not in _TABLES:
            raise ck.fail(None, table, f"unknown table or key (expected one of {sorted(_TABLES)})")
    study = data.get("study")
    if not isinstance(study, dict):
        raise ck.fail(None, "study", "missing required table [study]")
    for key in study:
        if key not in _STUDY_KEYS:
            raise ck.fail("study", key, f"unknown key (expected one of {', '.join(sorted(_STUDY_KEYS))})")
    for key in _REQUIRED:
        if key not in study:
            raise ck.fail("study", key, "missing required key")
    return _build(ck, data, study, resolve)


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


def _check_finite(ck: _Checker, data: Mapping[str, Any]) -> None:
    """TOML accepts ``inf`` and ``nan``; no hyperparameter or setting may be either."""
    for table, body in data.items():
        items = body.items() if isinstance(body, dict) else [(None, body)]
        for key, value in items:
            if _has_nonfinite(value):
                raise ck.fail(table if key else None, key or table, "non-finite number (inf or nan)")


def _int(ck: _Checker, study: Mapping[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = study.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ck.fail("study", key, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ck.fail("study", key, f"must be between {low} and {high}, got {value}")
    return value


def _choice(ck: _Checker, study: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = study.get(key, default)
    if value not in allowed:
        raise ck.fail("study", key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _build(ck: _Checker, data: Mapping[str, Any], study: Mapping[str, Any], resolve: bool) -> StudySpec:
    name = study["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ck.fail("study", "name", "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    workload = _workload_value(ck, study["workload"])
    info = _resolve(ck, workload) if resolve else None
    max_steps = _int(ck, study, "max_train_steps", 1, MAX_STEPS)
    budget_raw = study["budget"]
    if not isinstance(budget_raw, bool) and isinstance(budget_raw, int) and budget_raw < 1:
        raise ck.fail("study", "budget", f"must be at least 1, got {budget_raw}")
    budget = _int(ck, study, "budget", 1, MAX_BUDGET)
    eval_every = _int(ck, study, "eval_every", 1, max_steps, default=max(1, max_steps // 20))
    seed = _int(ck, study, "seed", 0, 2**31 - 1, default=0)
    metric = study.get("metric", info.default_metric if info else "val_error")
    if not isinstance(metric, str) or not _HP_RE.match(metric):
        raise ck.fail("study", "metric", f"must be a metric name, got {metric!r}")
    if info and info.metrics and metric not in info.metrics:
        raise ck.fail("study", "metric", f"workload {info.ref} reports {', '.join(info.metrics)}, not {metric!r}")
    mode = Mode(_choice(ck, study, "mode", tuple(Mode), info.default_mode if info else Mode.MIN))
    search = Search(_choice(ck, study, "search", SEARCH_METHODS, Search.QUASI_RANDOM))
    sci_mode = _choice(ck, study, "scientific_mode", SCIENTIFIC_MODES, "per_value")
    fuse = _fuse(ck, study.get("fuse", "auto"))
    gpus_per_trial = _int(ck, study, "gpus_per_trial", 1, MAX_GPUS_PER_TRIAL, default=1)
    target = study.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise ck.fail("study", "target", f"must be a number (the {metric} to reach), got {target!r}")
    for key in ("goal", "experiment"):
        if not isinstance(study.get(key, ""), str):
            raise ck.fail("study", key, "must be a string")
    experiment = study.get("experiment") or _default_experiment(workload)
    if experiment and not _NAME_RE.match(experiment):
        raise ck.fail("study", "experiment", "must be 1-64 letters, digits, '_', '.' or '-'")
    fixed = _fixed(ck, data.get("fixed", {}))
    nuisance = _params(ck, "nuisance", data.get("nuisance", {}))
    scientific = _params(ck, "scientific", data.get("scientific", {}))
    _check_roles(ck, fixed, nuisance, scientific)
    if info is not None:
        _check_against_workload(ck, info, fixed, nuisance, scientific)
    spec = StudySpec(
        name=name, workload=workload, metric=metric, mode=mode, max_train_steps=max_steps,
        eval_every=eval_every, budget=budget, search=search, seed=seed,
        goal=study.get("goal", ""), experiment=experiment, scientific_mode=sci_mode, fuse=fuse,
        target=None if target is None else float(target), gpus_per_trial=gpus_per_trial,
        workload_dir=info.source_dir if info is not None else "",
        fixed=fixed, nuisance=nuisance, scientific=scientific, source=ck.path,
    )
    _check_search(ck, spec)
    _check_command(ck, spec)
    return spec


def _default_experiment(workload: str | CommandWorkload) -> str:
    if isinstance(workload, CommandWorkload):
        named = [t for t in workload.command[1:] if not t.startswith("-") and "{" not in t]
        stem = Path((named or [workload.command[-1]])[0]).stem
        return re.sub(r"[^A-Za-z0-9_.-]", "-", stem)[:64] or "command"
    if workload.startswith("builtin:"):
        name = workload.split(":", 1)[1]
    else:  # "pkg.mymodel:train" -> "mymodel": functions are often all called train
        name = workload.split(":", 1)[0].rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:64] or "experiment"


def _command_fail(ck: _Checker, key: str, reason: str) -> SpecError:
    """An error in a command workload's key: the line in ``[study.workload]``, or the
    ``workload = {...}`` line of the inline form."""
    line = ck.lines.of("study.workload", key) or ck.lines.of("study.workload") or ck.lines.of("study", "workload")
    return SpecError(ck.path, f"study.workload.{key}", reason, line)


def _workload_value(ck: _Checker, value: Any) -> str | CommandWorkload:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        extra = sorted(set(value) - set(COMMAND_KEYS))
        if extra:
            raise _command_fail(ck, extra[0], f"unknown key (a command workload takes {', '.join(COMMAND_KEYS)})")
        cmd = value.get("command")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) and c for c in cmd):
            raise _command_fail(ck, "command", "must be a non-empty list of strings")
        for key in ("resume", "stdout"):
            items = value.get(key, [])
            if not isinstance(items, list) or not all(isinstance(c, str) and c for c in items):
                raise _command_fail(ck, key, "must be a list of strings")
        for key in ("cwd", "args", "bools"):
            if key in value and not isinstance(value[key], str):
                raise _command_fail(ck, key, f"must be a string, got {value[key]!r}")
        base = Path(ck.path).resolve().parent
        return CommandWorkload(
            command=tuple(cmd), cwd=str((base / value.get("cwd", ".")).resolve()),
            args=value.get("args", DEFAULT_ARGS), bools=value.get("bools", "lower"),
            resume=tuple(value.get("resume", [])), stdout=tuple(value.get("stdout", [])),
        )
    raise ck.fail("study", "workload", "must be 'builtin:NAME', 'package.module:function' or { command = [...] }")


def _resolve(ck: _Checker, workload: str | CommandWorkload) -> WorkloadInfo:
    from engine.workloads.registry import WorkloadError, resolve_workload

    try:
        return resolve_workload(workload, base_dir=str(Path(ck.path).resolve().parent))
    except WorkloadError as exc:
        key = getattr(exc, "key", "")
        if key and isinstance(workload, CommandWorkload):
            raise _command_fail(ck, key, str(exc)) from None
        raise ck.fail("study", "workload", str(exc)) from None


def _check_command(ck: _Checker, spec: StudySpec) -> None:
    if not isinstance(spec.workload, CommandWorkload):
        return
    try:
        check_command(spec.workload, spec.hyperparameter_names, spec.metric)
    except CommandConfigError as exc:
        raise _command_fail(ck, exc.key, exc.reason) from None


def _fuse(ck: _Checker, value: Any) -> str | int:
    if value in ("auto", "off"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65536:
        return value
    raise ck.fail("study", "fuse", f"must be 'auto', 'off' or a group size 1-65536, got {value!r}")


def _scalar_ok(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _fixed(ck: _Checker, table: Any) -> dict[str, Scalar]:
    if not isinstance(table, dict):
        raise ck.fail(None, "fixed", "must be a table of name = value")
    for key, value in table.items():
        if not _HP_RE.match(key):
            raise ck.fail("fixed", key, "hyperparameter names are letters, digits, '_', '.', '-'")
        if not _scalar_ok(value):
            raise ck.fail("fixed", key, f"must be a number, string or boolean, got {type(value).__name__}")
    return dict(table)


def _params(ck: _Checker, role: str, table: Any) -> tuple[Param, ...]:
    if not isinstance(table, dict):
        raise ck.fail(None, role, "must be a table of name = { low, high, scale } or { values = [...] }")
    return tuple(_param(ck, role, key, body) for key, body in table.items())


def _param(ck: _Checker, role: str, key: str, body: Any) -> Param:
    if not _HP_RE.match(key):
        raise ck.fail(role, key, "hyperparameter names are letters, digits, '_', '.', '-'")
    if not isinstance(body, dict):
        raise ck.fail(role, key, "must be { low = .., high = .., scale = .. } or { values = [...] }")
    if "values" in body:
        if set(body) - {"values"}:
            raise ck.fail(role, key, f"unknown key {sorted(set(body) - {'values'})[0]!r} beside values")
        values = body["values"]
        if not isinstance(values, list) or not values:
            raise ck.fail(role, key, "values must be a non-empty list")
        if not all(_scalar_ok(v) for v in values):
            raise ck.fail(role, key, "values must be numbers, strings or booleans")
        if len(set(map(repr, values))) != len(values):
            raise ck.fail(role, key, "values must not repeat")
        return ChoiceParam(key, tuple(values))
    unknown = set(body) - _RANGE_KEYS
    if unknown:
        raise ck.fail(role, key, f"unknown key {sorted(unknown)[0]!r} (expected low, high, scale or values)")
    for bound in ("low", "high"):
        if bound not in body:
            raise ck.fail(role, key, f"missing {bound!r}")
        if isinstance(body[bound], bool) or not isinstance(body[bound], (int, float)):
            raise ck.fail(role, key, f"{bound} must be a number, got {body[bound]!r}")
    low, high, scale = body["low"], body["high"], body.get("scale", "linear")
    if scale not in SCALES:
        raise ck.fail(role, key, f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if low >= high:
        raise ck.fail(role, key, f"low ({low}) must be below high ({high})")
    if scale in ("log", "int_log") and low <= 0:
        raise ck.fail(role, key, f"log scale needs low > 0, got {low}")
    if scale in ("int", "int_log") and not (float(low).is_integer() and float(high).is_integer()):
        raise ck.fail(role, key, "integer scale needs integer low and high")
    if scale in ("int", "int_log"):
        low, high = int(low), int(high)
    return RangeParam(key, low, high, scale)


def _check_roles(
    ck: _Checker, fixed: Mapping[str, Any], nuisance: tuple[Param, ...], scientific: tuple[Param, ...],
) -> None:
    seen: dict[str, str] = {name: "fixed" for name in fixed}
    for role, params in (("nuisance", nuisance), ("scientific", scientific)):
        for p in params:
            if p.name in seen:
                raise ck.fail(role, p.name, f"hyperparameter is both {seen[p.name]} and {role}; give it one role")
            seen[p.name] = role


def _check_search(ck: _Checker, spec: StudySpec) -> None:
    if spec.scientific_mode == "per_value":
        for p in spec.scientific:
            if isinstance(p, RangeParam):
                raise ck.fail("scientific", p.name,
                              "a range needs scientific_mode = \"joint\" (per_value compares listed values)")
        combos = math.prod(len(p.values) for p in spec.scientific if isinstance(p, ChoiceParam))
        if spec.budget < combos:
            raise ck.fail("study", "budget", f"{spec.budget} is fewer than the {combos} scientific values to compare")
        if spec.search is Search.BAYESIAN and not spec.nuisance:
            raise ck.fail("study", "search", "bayesian search needs at least one nuisance hyperparameter")
    elif spec.search is Search.BAYESIAN and not spec.searched:
        raise ck.fail("study", "search", "bayesian search needs at least one searched hyperparameter")


def _check_against_workload(
    ck: _Checker, info: WorkloadInfo, fixed: Mapping[str, Any],
    nuisance: tuple[Param, ...], scientific: tuple[Param, ...],
) -> None:
    if info.hyperparameters is None:
        return
    accepted = info.hyperparameters
    known = ", ".join(sorted(accepted))
    for role, names in (("fixed", list(fixed)), ("nuisance", [p.name for p in nuisance]),
                        ("scientific", [p.name for p in scientific])):
        for hp in names:
            if hp not in accepted:
                raise ck.fail(
                    role, hp, f"workload {info.ref} does not accept this hyperparameter (it accepts: {known})")
    for hp, value in fixed.items():
        reason = _value_problem(accepted[hp], value)
        if reason:
            raise ck.fail("fixed", hp, reason)
    for role, params in (("nuisance", nuisance), ("scientific", scientific)):
        for p in params:
            reason = _param_problem(accepted[p.name], p)
            if reason:
                raise ck.fail(role, p.name, reason)


def _value_problem(hp: Any, value: Any) -> str:
    if hp.kind == "any":
        return ""
    if hp.kind in ("choice",) and hp.choices is not None:
        return "" if value in hp.choices else f"must be one of {', '.join(map(str, hp.choices))}, got {value!r}"
    if hp.kind == "bool":
        return "" if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {value!r}"
    if hp.kind == "int" and not float(value).is_integer():
        return f"must be an integer, got {value!r}"
    if hp.low is not None and value < hp.low:
        return f"must be at least {hp.low}, got {value}"
    if hp.high is not None and value > hp.high:
        return f"must be at most {hp.high}, got {value}"
    return ""


def _param_problem(hp: Any, p: Param) -> str:
    if isinstance(p, ChoiceParam):
        for v in p.values:
            reason = _value_problem(hp, v)
            if reason:
                return reason
        return ""
    if hp.kind == "any":
        return ""
    if hp.kind in ("choice", "bool"):
        return "takes listed values: use { values = [...] }"
    if hp.kind == "int" and p.scale not in ("int", "int_log"):
        return "is an integer: use scale = \"int\" or \"int_log\""
    return _value_problem(hp, p.low) or _value_problem(hp, p.high)
