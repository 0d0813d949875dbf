"""Every shipped study file, analysed on quick synthetic trials (no training): its report
opens with one next-round plan that never holds two directions for one topic, every finding
that points a direction either is the plan's direction or is named as overruled, and the
drafted study file validates and changes exactly what the plan says, with a comment each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.analysis import StudyReport, analyze_study
from engine.analysis.findings import Finding
from engine.analysis.plan import Budget, Length, NextRoundPlan, RangeAction
from engine.space import RangeParam
from engine.spec import MAX_BUDGET, StudySpec, load_study, parse_study
from tests.synthetic_study import synthetic
from tuneplay_tui.report_cli import build_sections, render_text

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.toml"))
SCENARIOS = range(5)

DIRECTION = {"best_checkpoint_late": Length.LONGER, "still_improving": Length.LONGER,
             "best_checkpoint_early": Length.SHORTER, "saturated_early": Length.SHORTER,
             "sparse_sampling": Budget.MORE, "insensitive": RangeAction.INSENSITIVE}


def directions(report: StudyReport) -> Iterator[tuple[str, str, Finding]]:
    """(topic, direction, finding) for every finding that points the next round somewhere."""
    for f in report.findings:
        if f.kind in ("best_checkpoint_late", "still_improving", "best_checkpoint_early",
                      "saturated_early"):
            yield "max_train_steps", DIRECTION[f.kind], f
        elif f.kind == "sparse_sampling":
            yield "budget", Budget.MORE, f
        elif f.kind == "budget_sensitivity":
            yield "budget", Budget.ENOUGH if f.evidence["saturated"] else Budget.MORE, f
        elif f.kind == "insensitive":
            yield f.subject, RangeAction.INSENSITIVE, f
        elif f.kind == "boundary" and f.severity == "warn":
            grows = (f.evidence["proposed_low"], f.evidence["proposed_high"]) != (
                f.evidence["low"], f.evidence["high"])
            yield f.subject, RangeAction.EXPAND if grows else RangeAction.KEEP, f


def overruled(item: Any, f: Finding) -> bool:
    return any(b.kind == f.kind and f.subject in b.subject.split(", ") for b in item.overruled)


@pytest.mark.parametrize("seed", SCENARIOS)
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_shipped_study_gets_one_plan_with_one_direction_per_topic(path: Path, seed: int) -> None:
    spec = load_study(path)
    trials, curves = synthetic(spec, seed)
    report = analyze_study(spec, trials, curves)
    plan = report.next_round
    assert plan is not None
    items = {i.topic: i for i in plan.items()}
    assert list(items) == ["max_train_steps", "budget", *(p.name for p in spec.searched)]
    for topic, direction, finding in directions(report):
        item = items[topic]
        assert item.action == direction or overruled(item, finding), (
            f"{topic}: the plan says {item.action}, {finding.kind} says {direction} and is not "
            f"named as overruled: {finding.message}")
    check_draft(spec, plan)
    text = render_text(build_sections(SimpleNamespace(report=report, scaling=None), 100, False))
    head = text.split("── Findings")[0]
    assert "── Next round" in head  # the plan comes before the findings it resolves
    for item in plan.items():
        assert head.count(f" ▶ {item.topic}: ") == 1
        assert f" ▶ {item.topic}: {item.action} " in head


def check_draft(spec: StudySpec, plan: NextRoundPlan) -> None:
    """The draft validates and differs from the study exactly as the plan says."""
    again = parse_study(plan.draft, str(Path(spec.source).with_name(f"{plan.name}.toml")))
    assert again.name == plan.name != spec.name and again.experiment == spec.experiment
    assert again.workload == spec.workload and dict(again.fixed) == dict(spec.fixed)
    assert (again.metric, again.mode, again.search, again.seed) == (spec.metric, spec.mode, spec.search, spec.seed)
    t, b = plan.training, plan.budget
    steps = {Length.LONGER: again.max_train_steps > spec.max_train_steps,
             Length.SHORTER: again.max_train_steps < spec.max_train_steps,
             Length.KEEP: again.max_train_steps == spec.max_train_steps}
    assert steps[t.action] and again.max_train_steps == t.proposed
    budget = {Budget.MORE: again.budget > spec.budget or spec.budget >= MAX_BUDGET // 2,
              Budget.ENOUGH: again.budget == spec.budget}
    assert budget[b.action] and again.budget == b.proposed
    ranges = {r.name: r for r in plan.ranges}
    for old, new in zip(spec.searched, again.searched, strict=True):
        item = ranges[old.name]
        if not isinstance(old, RangeParam):
            assert new == old and item.action == RangeAction.KEEP
            continue
        assert isinstance(new, RangeParam) and new.scale == old.scale
        if item.action == RangeAction.EXPAND:
            assert new.low <= old.low and new.high >= old.high and new != old
        elif item.action == RangeAction.NARROW:
            assert old.low <= new.low < new.high <= old.high and new != old
        else:
            assert new == old
    for line in plan.draft.splitlines():
        key = line.split(" = ")[0]
        changed = (key == "max_train_steps" and t.proposed != t.current
                   or key == "budget" and b.proposed != b.current
                   or key in ranges and ranges[key].changed)
        assert ("# next round:" in line) == (changed or key in ranges and ranges[key].action
                                             == RangeAction.INSENSITIVE), line
