"""The next round's study file: the study as it ran, changed the way its plan says.

Same experiment, workload, metric, search and fixed hyperparameters; a new name (a stored
study's search cannot change), and the plan's ``max_train_steps``, budget and ranges. Every
changed line carries a ``# next round: ...`` comment saying what it was and why it changed,
and the header lists the whole plan. The text is pure TOML that ``tuneplay validate`` reads
back into a :class:`~engine.spec.StudySpec`; a command workload is written as its
``[study.workload]`` table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.analysis.plan import NextRoundPlan, RangeAction, RangePlan
from engine.space import ChoiceParam, Param, format_value
from engine.spec import StudySpec
from engine.workloads.command import CommandWorkload

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def next_study_toml(spec: StudySpec, plan: NextRoundPlan) -> str:
    """The study file of ``plan``'s next round (TOML text, comments included)."""
    lines = _header(spec, plan)
    lines += ["[study]", *_study_table(spec, plan)]
    if isinstance(spec.workload, CommandWorkload):
        lines += ["", "[study.workload]", *_workload_table(spec.workload)]
    if spec.fixed:
        lines += ["", "[fixed]", *(f"{_key(k)} = {toml_value(v)}" for k, v in spec.fixed.items())]
    ranges = {r.name: r for r in plan.ranges}
    for role, params in (("nuisance", spec.nuisance), ("scientific", spec.scientific)):
        if params:
            lines += ["", f"[{role}]", *(_param_line(p, ranges.get(p.name)) for p in params)]
    return "\n".join(lines) + "\n"


def _header(spec: StudySpec, plan: NextRoundPlan) -> list[str]:
    topics = [f"#   {i.topic}: {i.action} {i.change}" for i in plan.items()]
    return [f'# Next round of study "{spec.name}", drafted from its analysis (`tuneplay next`):',
            *topics,
            "# Each changed line says why. Review it, then run it: tuneplay run THIS_FILE", ""]


def _study_table(spec: StudySpec, plan: NextRoundPlan) -> list[str]:
    t, b = plan.training, plan.budget
    eval_every = min(spec.eval_every, t.proposed)
    rows: list[tuple[str, Any, str]] = [
        ("name", plan.name, f'was "{spec.name}": a new study for the next round'),
    ]
    if spec.experiment:
        rows.append(("experiment", spec.experiment, ""))
    if not isinstance(spec.workload, CommandWorkload):
        rows.append(("workload", spec.workload, ""))
    if spec.goal:
        rows.append(("goal", spec.goal, ""))
    rows += [
        ("metric", spec.metric, ""), ("mode", spec.mode, ""),
        ("max_train_steps", t.proposed, _why(t.action, spec.max_train_steps, t.reason)
         if t.proposed != spec.max_train_steps else ""),
        ("eval_every", eval_every, f"was {spec.eval_every}: no more than max_train_steps"
         if eval_every != spec.eval_every else ""),
        ("budget", b.proposed, _why(b.action, spec.budget, b.reason)
         if b.proposed != spec.budget else ""),
        ("search", spec.search, ""), ("seed", spec.seed, ""),
        ("scientific_mode", spec.scientific_mode, ""),
    ]
    if spec.fuse != "auto":
        rows.append(("fuse", spec.fuse, ""))
    if spec.target is not None:
        rows.append(("target", spec.target, ""))
    if spec.gpus_per_trial != 1:
        rows.append(("gpus_per_trial", spec.gpus_per_trial, ""))
    return [_line(k, toml_value(v), why) for k, v, why in rows]


def _workload_table(workload: CommandWorkload) -> list[str]:
    table = {k: v for k, v in workload.to_dict().items() if v or k == "args"}
    return [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]


def _param_line(param: Param, item: RangePlan | None) -> str:
    if isinstance(param, ChoiceParam):
        return f"{_key(param.name)} = {{ values = {toml_value(list(param.values))} }}"
    low, high = param.low, param.high
    why = ""
    if item is not None and item.changed and item.new_low is not None and item.new_high is not None:
        low, high = item.new_low, item.new_high
        why = _why(item.action, f"[{format_value(param.low)}, {format_value(param.high)}]",
                   item.reason)
    elif item is not None and item.action == RangeAction.INSENSITIVE:
        why = f"next round: insensitive, kept: {item.reason}"
    body = toml_value({"low": low, "high": high, "scale": param.scale})
    return _line(_key(param.name), body, why)


def _why(action: str, was: Any, reason: str) -> str:
    return f"next round: {action} (was {was}): {reason}"


def _line(key: str, value: str, comment: str) -> str:
    if not comment:
        return f"{key} = {value}"
    return f"{key} = {value}  # {' '.join(comment.split())}"


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def toml_value(value: Any) -> str:
    """One TOML value: booleans, integers, floats, strings, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"no TOML form for {value!r}")
