"""The next-round plan: one action per topic, resolved from all of a study's findings.

The findings of a report are observations, and some pull different ways (the best
checkpoints land late while one trial's curve is flat; the good region is thin while the
best value has saturated). The plan turns them into one decision per topic -- how long to
train, whether to spend more trials, and what to do with each searched range -- and keeps
the findings as its evidence, naming the ones it overruled and why. Two rules hold
throughout: **study-level evidence outranks a single trial**, and **a plan never holds two
directions for one topic** (each topic's rules below are tried in order; the first that
applies decides).

Training length (``longer | shorter | keep``, with a ``max_train_steps``):
  1. The best-checkpoint histogram of all feasible trials (study level) decides when it flags
     a direction: early -> shorter, late -> longer, each to its suggested max_train_steps
     (:mod:`engine.analysis.checkpoints`). Curves of single trials pointing the other way
     are overruled.
  2. Otherwise the curves of the best trials vote: still improving in most of the diagnosed
     trials (more than half, at least 2) -> longer (x1.5); saturated early in most of them ->
     shorter (1.5 x the latest step at which they saturated, rounded up, at least
     ``eval_every``).
  3. Otherwise keep; a minority of trials pointing either way is overruled.

Budget (``more | enough``, with a trial budget):
  1. Sparse sampling (fewer than 5 trials in the good region) -> more: the good region's
     shape rests on too few trials. A saturated best-vs-trials curve is overruled: it says
     the best value would barely improve, not that the region is known.
  2. Otherwise the bootstrap decides: the best still depends on the budget -> more;
     saturated -> enough.
  "more" doubles the budget (kept a multiple of the scientific values compared).

Ranges (``expand | narrow | keep | insensitive``, with the new bounds), per searched
hyperparameter:
  1. expand: the boundary check flags an edge (most of the top trials in its outer 10%)
     and the range can grow there -> its proposed bounds. Outranks the rest: the optimum may
     lie outside the range.
  2. insensitive: no visible effect over the range (the boundary module's rule) -> bounds
     kept; narrowing it would not help.
  3. narrow (nuisance ranges only; a scientific range is the study's question): at least 3
     good trials in a compact part of the range -> the density check's narrowed range
     (:func:`engine.analysis.boundary.narrow_range`: padded, never a single point).
  4. keep: otherwise, including a single best trial at an edge (one trial is weak evidence)
     and an edge at a natural bound. Categorical hyperparameters keep their values.

A plan needs at least 3 feasible search trials (:data:`MIN_RESULTS`); with fewer there is
none. :func:`engine.analysis.draft.next_study_toml` writes the plan as the next study file.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from engine.analysis.boundary import BoundaryCheck
from engine.analysis.budget import BestVsTrials
from engine.analysis.checkpoints import (
    LENGTHEN_BY,
    SHORTEN_MARGIN,
    BestCheckpoints,
    round_up_steps,
)
from engine.analysis.curves import CurveDiagnostics
from engine.analysis.density import MIN_GOOD, DimensionDensity, SamplingDensity
from engine.analysis.findings import (
    BEST_CHECKPOINT_EARLY,
    BEST_CHECKPOINT_LATE,
    BOUNDARY,
    SATURATED_EARLY,
    STILL_IMPROVING,
    Finding,
)
from engine.space import ChoiceParam, Param, format_value
from engine.spec import MAX_BUDGET, StudySpec

MIN_RESULTS = 3  # fewer feasible search trials: nothing to plan from
MAX_NAME = 64  # study names are at most 64 characters


class Length(StrEnum):
    """What to do with ``max_train_steps``."""

    LONGER = "longer"
    SHORTER = "shorter"
    KEEP = "keep"


class Budget(StrEnum):
    """Whether the next round needs more trials."""

    MORE = "more"
    ENOUGH = "enough"


class RangeAction(StrEnum):
    """What to do with one searched hyperparameter's range."""

    EXPAND = "expand"
    NARROW = "narrow"
    KEEP = "keep"
    INSENSITIVE = "insensitive"


@dataclass(frozen=True)
class Basis:
    """A finding behind a plan item, named by its ``kind`` and ``subject`` (the report lists
    it in full); ``note`` says why it was overruled (empty for one that supports the item)."""

    kind: str
    subject: str
    note: str = ""

    @classmethod
    def of(cls, finding: Finding, note: str = "") -> Basis:
        return cls(finding.kind, finding.subject, note)

    def describe(self) -> str:
        """``saturated_early (trial 4): why``, as the report lists an overruled finding."""
        return f"{self.kind} ({self.subject})" + (f": {self.note}" if self.note else "")


@dataclass(frozen=True)
class StepsPlan:
    """The training length of the next round: ``current`` -> ``proposed`` max_train_steps."""

    action: Length
    current: int
    proposed: int
    reason: str
    evidence: tuple[Basis, ...] = ()
    overruled: tuple[Basis, ...] = ()

    topic = "max_train_steps"

    @property
    def change(self) -> str:
        return _steps(self.current, self.proposed)


@dataclass(frozen=True)
class BudgetPlan:
    """The trial budget of the next round: ``current`` -> ``proposed`` trials."""

    action: Budget
    current: int
    proposed: int
    reason: str
    evidence: tuple[Basis, ...] = ()
    overruled: tuple[Basis, ...] = ()

    topic = "budget"

    @property
    def change(self) -> str:
        return _steps(self.current, self.proposed)


@dataclass(frozen=True)
class RangePlan:
    """One searched hyperparameter in the next round.

    ``low``/``high`` are the range searched, ``new_low``/``new_high`` the next one (both None
    for a categorical, whose ``values`` are kept); ``scale`` is ``categorical`` for those.
    """

    name: str
    role: str
    scale: str
    action: RangeAction
    low: float | None
    high: float | None
    new_low: float | None
    new_high: float | None
    values: tuple[Any, ...]
    reason: str
    evidence: tuple[Basis, ...] = ()
    overruled: tuple[Basis, ...] = ()

    @property
    def topic(self) -> str:
        return self.name

    @property
    def changed(self) -> bool:
        return (self.new_low, self.new_high) != (self.low, self.high)

    @property
    def change(self) -> str:
        if self.scale == "categorical":
            return "{" + ", ".join(format_value(v) for v in self.values) + "}"
        now = _bounds(self.low, self.high)
        if not self.changed:
            return f"{now} {self.scale}"
        return f"{now} → {_bounds(self.new_low, self.new_high)} {self.scale}"


PlanItem = StepsPlan | BudgetPlan | RangePlan


def _steps(current: int, proposed: int) -> str:
    return f"{current} → {proposed}" if proposed != current else str(current)


@dataclass(frozen=True)
class NextRoundPlan:
    """One consistent plan for the study's next round, and its study file.

    Attributes:
        study: the study analysed; ``name`` the next study's name, ``path`` where its file
            goes by default (beside the study's own file).
        training, budget, ranges: one item per topic (see the module doc for the rules).
        draft: the next study file (TOML), one comment per change saying why.
    """

    study: str
    name: str
    path: str
    training: StepsPlan
    budget: BudgetPlan
    ranges: tuple[RangePlan, ...]
    draft: str = ""

    def items(self) -> tuple[PlanItem, ...]:
        """Every topic, in the order the report lists them."""
        return (self.training, self.budget, *self.ranges)

    def lines(self) -> list[str]:
        """One line per topic: ``max_train_steps: longer 300 → 450 — why``."""
        return [f"{i.topic}: {i.action} {i.change} — {i.reason}" for i in self.items()]


def plan_next_round(
    spec: StudySpec, *, n_feasible: int, boundaries: Sequence[BoundaryCheck] = (),
    density: SamplingDensity | None = None, curves: CurveDiagnostics | None = None,
    checkpoints: BestCheckpoints | None = None, budget: BestVsTrials | None = None,
    taken_names: Collection[str] = (),
) -> NextRoundPlan | None:
    """The next-round plan from a study's analyses (None with fewer than 3 results).

    Args:
        spec: the study analysed.
        n_feasible: its feasible search trials.
        boundaries, density, curves, checkpoints, budget: the report's parts.
        taken_names: study names already in use (the next study gets a free one).
    """
    if n_feasible < MIN_RESULTS:
        return None
    checks = {c.name: c for c in boundaries}
    dims = {d.name: d for d in density.dimensions} if density else {}
    ranges = tuple(_range(spec, p, checks.get(p.name), dims.get(p.name), density)
                   for p in spec.searched)
    name = next_name(spec.name, taken_names)
    plan = NextRoundPlan(spec.name, name, next_path(spec, name),
                         _training(spec, checkpoints, curves), _budget(spec, density, budget), ranges)
    from engine.analysis.draft import next_study_toml  # the file is written from the plan

    return dataclasses.replace(plan, draft=next_study_toml(spec, plan))


# ----------------------------------------------------------------------------- training length

def _training(spec: StudySpec, checkpoints: BestCheckpoints | None,
              curves: CurveDiagnostics | None) -> StepsPlan:
    current = spec.max_train_steps
    per_trial = curves.findings if curves else ()
    improving = [f for f in per_trial if f.kind == STILL_IMPROVING]
    saturated = [f for f in per_trial if f.kind == SATURATED_EARLY]
    n_diag = len({t for f in per_trial for t in f.trial_ids})
    kind = checkpoints.finding.kind if checkpoints else None
    if checkpoints and checkpoints.suggested_max_train_steps and kind in (
            BEST_CHECKPOINT_EARLY, BEST_CHECKPOINT_LATE):
        return _by_checkpoints(checkpoints, current, improving, saturated)
    need = max(2, n_diag // 2 + 1)
    if len(improving) >= need:
        why = f"{len(improving)} of the {n_diag} best trials' curves are still improving at the end"
        return StepsPlan(Length.LONGER, current, round_up_steps(LENGTHEN_BY * current), why,
                         _bases(improving), _minority(saturated, n_diag))
    if len(saturated) >= need:
        last = max(int(f.evidence.get("saturated_step", current)) for f in saturated)
        new = min(current, max(spec.eval_every, round_up_steps(SHORTEN_MARGIN * last)))
        why = f"{len(saturated)} of the {n_diag} best trials' curves are flat from step {last} on"
        if new < current:
            return StepsPlan(Length.SHORTER, current, new, why, _bases(saturated),
                             _minority(improving, n_diag))
        late = "they flatten too late for a shorter run to save steps"
        return StepsPlan(Length.KEEP, current, current, f"{why}, {late}", (),
                         (*_bases(saturated, late), *_minority(improving, n_diag)))
    why = ("the best checkpoints land mid-training" if checkpoints else
           "no study-level sign that training is too short or too long")
    if improving or saturated:
        why += "; the best trials' curves do not agree on a direction"
    support = (Basis.of(checkpoints.finding),) if checkpoints else ()
    return StepsPlan(Length.KEEP, current, current, why, support,
                     _minority(improving + saturated, n_diag))


def _by_checkpoints(checkpoints: BestCheckpoints, current: int, improving: list[Finding],
                    saturated: list[Finding]) -> StepsPlan:
    """The study-level histogram decides; single trials' curves the other way are overruled."""
    new = int(checkpoints.suggested_max_train_steps or current)
    n = checkpoints.n_trials
    note = f"single trials' curves; the best checkpoints of all {n} feasible trials outrank them"
    if checkpoints.finding.kind == BEST_CHECKPOINT_LATE:
        why = (f"{checkpoints.share_late:.0%} of the best checkpoints land in the last 25% of "
               f"training; revisit the learning-rate decay schedule with it")
        return StepsPlan(Length.LONGER, current, new, why,
                         (Basis.of(checkpoints.finding), *_bases(improving)),
                         _bases(saturated, note))
    why = f"{checkpoints.share_early:.0%} of the best checkpoints land in the first 10% of training"
    if new >= current:
        late = "the latest best checkpoints need every step of the current length"
        return StepsPlan(Length.KEEP, current, current, f"{why}, but {late}", (),
                         (Basis.of(checkpoints.finding, late), *_bases(saturated, late),
                          *_bases(improving, note)))
    return StepsPlan(Length.SHORTER, current, new, why,
                     (Basis.of(checkpoints.finding), *_bases(saturated)), _bases(improving, note))


def _bases(findings: Sequence[Finding], note: str = "") -> tuple[Basis, ...]:
    """One basis per finding kind: per-trial findings of a kind share one line."""
    subjects: dict[str, list[str]] = {}
    for f in findings:
        subjects.setdefault(f.kind, []).append(f.subject)
    return tuple(Basis(kind, ", ".join(subs), note) for kind, subs in subjects.items())


def _minority(findings: Sequence[Finding], n_diag: int) -> tuple[Basis, ...]:
    return tuple(dataclasses.replace(b, note=f"{b.subject.count(',') + 1} of the {n_diag} best "
                                     "trials only: not the study") for b in _bases(findings))


# ----------------------------------------------------------------------------- budget

def _budget(spec: StudySpec, density: SamplingDensity | None,
            bvt: BestVsTrials | None) -> BudgetPlan:
    current = spec.budget
    combos = _combos(spec)
    more = max(combos, min(MAX_BUDGET, 2 * current) // combos * combos)
    saturated = bvt is not None and bool(bvt.finding.evidence.get("saturated"))
    if density is not None and density.n_good < MIN_GOOD:
        why = (f"only {density.n_good} of {density.n_feasible} trials reach the good region: too "
               f"few to trust its shape")
        over = (Basis.of(bvt.finding, "it says the best value would barely improve, not that "
                         "the good region is known"),) if bvt is not None and saturated else ()
        return BudgetPlan(Budget.MORE, current, more, why, (Basis.of(density.finding),), over)
    support = (Basis.of(density.finding),) if density else ()
    if bvt is not None and not saturated:
        ev = bvt.finding.evidence
        why = (f"the expected best still improves with more trials (bootstrap median "
               f"{format_value(ev.get('median_half'))} with {ev.get('n_half')} trials, "
               f"{format_value(ev.get('median_observed'))} with {ev.get('n_observed')})")
        return BudgetPlan(Budget.MORE, current, more, why, (Basis.of(bvt.finding),))
    if bvt is None:
        return BudgetPlan(Budget.ENOUGH, current, current, "too few results to judge the budget",
                          support)
    why = "the best has saturated: more trials of this search would barely improve it"
    if density is not None:
        why = f"{density.n_good} trials reach the good region, and {why}"
    return BudgetPlan(Budget.ENOUGH, current, current, why, (Basis.of(bvt.finding), *support))


def _combos(spec: StudySpec) -> int:
    """Trials of one point: every scientific value once (per_value), else 1."""
    if spec.scientific_mode != "per_value":
        return 1
    return math.prod(len(p.values) for p in spec.scientific if isinstance(p, ChoiceParam))


# ----------------------------------------------------------------------------- ranges

def _range(spec: StudySpec, param: Param, check: BoundaryCheck | None,
           dim: DimensionDensity | None, density: SamplingDensity | None) -> RangePlan:
    role = spec.role_of(param.name) or "nuisance"
    if isinstance(param, ChoiceParam):
        why = ("the values the study compares" if role == "scientific"
               else "categorical: its values are kept")
        return RangePlan(param.name, role, "categorical", RangeAction.KEEP, None, None, None, None,
                         param.values, why)
    base = RangePlan(param.name, role, param.scale, RangeAction.KEEP, param.low, param.high,
                     param.low, param.high, (), "too few results to judge it")
    if check is None:
        return base
    narrowing = _narrowing(dim, density, role)
    if check.edges:
        return _edge(base, check, density.finding if narrowing and density else None)
    if check.insensitive:
        s = check.sensitivity
        assert s is not None
        why = (f"no visible effect: the best {spec.metric} in each third of the range differs by "
               f"{format_value(s.effect)}, within its noise ({format_value(s.tolerance)})")
        over = (Basis.of(density.finding, "narrowing a range with no effect would not help"),
                ) if narrowing and density else ()
        return dataclasses.replace(base, action=RangeAction.INSENSITIVE, reason=why,
                                   evidence=(Basis.of(check.finding),), overruled=over)
    if narrowing is not None and density is not None and dim is not None:
        why = (f"the {density.n_good} trials in the good region span "
               f"{_bounds(dim.good_low, dim.good_high)}: a narrower range samples it more densely")
        info = _single_edge(check)
        return dataclasses.replace(base, action=RangeAction.NARROW, new_low=narrowing[0],
                                   new_high=narrowing[1], reason=why,
                                   evidence=(Basis.of(density.finding), Basis.of(check.finding)),
                                   overruled=info)
    if check.finding.kind == BOUNDARY:  # the single best trial at an edge: an info finding
        edge = check.finding.evidence.get("edge_of_best", "an")
        why = f"only the single best trial sits at its {edge} edge: one trial is weak evidence"
        return dataclasses.replace(base, reason=why, overruled=_single_edge(check))
    why = "the best trials sit inside it and no edge holds most of them"
    return dataclasses.replace(base, reason=why, evidence=(Basis.of(check.finding),))


def _edge(base: RangePlan, check: BoundaryCheck, narrowed_by: Finding | None) -> RangePlan:
    ev = check.finding.evidence
    k = ev.get("top_k", len(check.top_trial_ids))
    parts = [f"{check.n_near_high if e == 'upper' else check.n_near_low} of the top {k} trials sit "
             f"in the {'top' if e == 'upper' else 'bottom'} 10% of its range" for e in check.edges]
    why = " and ".join(parts)
    if (check.proposed_low, check.proposed_high) == (check.low, check.high):
        why += ", at a natural bound: consider fixing it there"
        return dataclasses.replace(base, reason=why, evidence=(Basis.of(check.finding),))
    over = (Basis.of(narrowed_by, "an edge outranks narrowing: the optimum may lie outside "
                     "the range"),) if narrowed_by is not None else ()
    return dataclasses.replace(base, action=RangeAction.EXPAND, new_low=check.proposed_low,
                               new_high=check.proposed_high, reason=why,
                               evidence=(Basis.of(check.finding),), overruled=over)


def _narrowing(dim: DimensionDensity | None, density: SamplingDensity | None,
               role: str) -> tuple[float, float] | None:
    if dim is None or density is None or role != "nuisance" or dim.narrowed_low is None:
        return None
    assert dim.narrowed_high is not None
    return dim.narrowed_low, dim.narrowed_high


def _single_edge(check: BoundaryCheck) -> tuple[Basis, ...]:
    if check.finding.kind != BOUNDARY or check.edges:
        return ()
    return (Basis.of(check.finding, "only the single best trial sits at the edge: one trial "
                     "is weak evidence"),)


def _bounds(low: Any, high: Any) -> str:
    return f"[{format_value(low)}, {format_value(high)}]"


# ----------------------------------------------------------------------------- naming

def next_name(name: str, taken: Collection[str] = ()) -> str:
    """The next round's study name: ``lr`` -> ``lr-r2``, ``lr-r2`` -> ``lr-r3``, skipping
    names in ``taken``; at most 64 characters."""
    m = re.fullmatch(r"(.+)-r(\d+)", name)
    base, n = (m.group(1), int(m.group(2)) + 1) if m else (name, 2)
    while True:
        suffix = f"-r{n}"
        candidate = base[: MAX_NAME - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def next_path(spec: StudySpec, name: str) -> str:
    """Where the next study's file goes: beside the study's own file (so a workload named
    relative to it still resolves), else ``studies/NAME.toml``."""
    if spec.source and not spec.source.startswith("<"):
        return str(Path(spec.source).with_name(f"{name}.toml"))
    return str(Path("studies") / f"{name}.toml")
