"""The decision stage: rerun the best configurations and the baseline with new seeds, then
compare them with a stated test, record the verdict, and adopt a winner as the next baseline.

A study's own best trial was *selected* as the best of many, so its value is optimistic;
only fresh seeds of the same configuration measure what it is worth (and the trial
variance a difference must beat).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.analysis import Comparison, analyze_study, compare, complexity_note, trials_frame
from engine.kinds import Mode, TrialKind, Verdict
from engine.spec import stored_study
from engine.store.base import Baseline, Decision, Storage, StoreError, Study, Trial, TrialState
from engine.workspace import enqueue_reruns, study_spec

RERUN = TrialKind.RERUN
BASELINE = TrialKind.BASELINE


@dataclass(frozen=True)
class RerunPlan:
    candidates: list[dict[str, Any]]
    baseline: dict[str, Any]
    seeds: list[int]
    trials: list[Trial]


@dataclass(frozen=True)
class DecisionResult:
    """A comparison and where it was recorded; ``new_baseline`` when adopted."""

    comparison: Comparison
    candidate: dict[str, Any]
    baseline: Baseline
    complexity: str
    protocol: str
    decision: Decision
    new_baseline: Baseline | None


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def latest_baseline(store: Storage, study: Study) -> Baseline:
    baselines = store.list_baselines(study.experiment_id)
    if not baselines:
        raise StoreError(f"experiment of study {study.name!r} has no baseline")
    return baselines[-1]


def rerun_seeds(study: Study, existing: Sequence[Trial], n: int) -> list[int]:
    """``n`` seeds not used by this study's reruns before (so "more seeds" adds new ones)."""
    used = {t.seed for t in existing if t.kind in (RERUN, BASELINE)}
    out: list[int] = []
    j = 0
    while len(out) < n:
        s = int(np.random.SeedSequence([study.seed, 7_919, j]).generate_state(1)[0] % 2**31)
        if s not in used:
            out.append(s)
        j += 1
    return out


def plan_reruns(store: Storage, study: Study, best_k: int, seeds: int) -> RerunPlan:
    """Enqueue the best ``best_k`` configurations and the baseline, each with ``seeds`` new seeds."""
    if best_k < 1 or seeds < 1:
        raise StoreError("--best and --seeds must be at least 1")
    spec = study_spec(study)
    trials = store.list_trials(study.id)
    report = analyze_study(spec, trials_frame(trials))
    if not report.top_trial_ids:
        raise StoreError(f"study {study.name!r} has no completed trial to rerun yet")
    by_id = {t.id: t for t in trials}
    candidates = [dict(by_id[i].params) for i in report.top_trial_ids[:best_k]]
    names = spec.hyperparameter_names
    base_cfg = dict(stored_study(study).base_config)
    baseline = {k: latest_baseline(store, study).config.get(k, base_cfg.get(k)) for k in names}
    baseline = {k: v for k, v in baseline.items() if v is not None}
    seed_list = rerun_seeds(study, trials, seeds)
    new = enqueue_reruns(store, study, candidates, seed_list, RERUN)
    new += enqueue_reruns(store, study, [baseline], seed_list, BASELINE)
    return RerunPlan(candidates, baseline, seed_list, new)


def rerun_groups(trials: Sequence[Trial], kind: str) -> dict[str, list[Trial]]:
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        if t.kind == kind:
            groups.setdefault(_key(t.params), []).append(t)
    return groups


def _values(group: Sequence[Trial]) -> list[float]:
    return [t.best_value for t in group if t.state == TrialState.COMPLETED and t.best_value is not None]


def curves_differ(store: Storage, group: Sequence[Trial]) -> bool:
    """Whether the seeds of a rerun group changed anything at all: any reported point of any
    metric that differs between them. Equal best values alone do not show an ignored seed
    (an error rate over a few hundred examples can agree by chance); equal whole curves do."""
    done = [t.id for t in group if t.state == TrialState.COMPLETED]
    curves: dict[int, list[tuple[int, str, float]]] = {tid: [] for tid in done}
    for row in store.read_metrics(done):
        curves[row.trial_id].append((row.step, row.name, row.value))
    shapes = {json.dumps(sorted(c)) for c in curves.values()}
    return len(shapes) > 1


def decide(
    store: Storage, study: Study, adopt: bool = False, alpha: float = 0.05, force: bool = False,
) -> DecisionResult:
    """Compare the best rerun candidate with the baseline reruns and record the verdict.

    With ``adopt``, an ADOPT verdict (or any verdict with ``force``) launches the next
    baseline version with the candidate's values. Seed reruns that all came out identical
    (the workload ignores its seed) are never an ADOPT: see :func:`engine.analysis.compare`.
    """
    spec = study_spec(study)
    trials = store.list_trials(study.id)
    pending = [t for t in trials if t.kind in (RERUN, BASELINE) and not t.state.is_finished()]
    if pending:
        raise StoreError(f"{len(pending)} rerun trials of {study.name!r} are still queued or running; wait for them")
    candidates = rerun_groups(trials, RERUN)
    baselines = rerun_groups(trials, BASELINE)
    if not candidates or not baselines:
        raise StoreError(f"study {study.name!r} has no seed reruns yet: run `tuneplay rerun {study.name}` first")
    base_values = [v for g in baselines.values() for v in _values(g)]
    sign = Mode(spec.mode).sign
    scored = [(sign * float(np.mean(_values(g))) if _values(g) else np.inf, k) for k, g in candidates.items()]
    best_key = min(scored)[1]
    cand_params = json.loads(best_key)
    cand_values = _values(candidates[best_key])
    seeded = {side for side, group in (("candidate", candidates[best_key]),
                                       ("baseline", [t for g in baselines.values() for t in g]))
              if curves_differ(store, group)}
    comparison = compare(cand_values, base_values, spec.mode, alpha=alpha, workload=spec.workload,
                         metric=spec.metric, seeded=seeded)
    baseline = latest_baseline(store, study)
    note = complexity_note(cand_params, baseline.config)
    stats = {
        "candidate_values": cand_values, "baseline_values": base_values,
        "comparison": comparison.to_dict(),
        "protocol": spec.protocol(),
    }
    decision = _same_as_last(store, study, stats) or store.record_decision(
        study.experiment_id, study.id, comparison.verdict, cand_params, baseline.version,
        comparison.test, stats, comparison.reason, note,
    )
    new_baseline = None
    if adopt and (comparison.verdict == Verdict.ADOPT or force):
        new_baseline = store.add_baseline(
            study.experiment_id, {**baseline.config, **cand_params}, baseline.metric, baseline.mode,
            baseline.max_train_steps, note=f"adopted from study {study.name!r} (decision {decision.id})",
        )
    return DecisionResult(comparison, cand_params, baseline, note, spec.protocol(), decision, new_baseline)


def _same_as_last(store: Storage, study: Study, stats: Mapping[str, Any]) -> Decision | None:
    """The study's latest decision if it judged exactly these reruns (no duplicate records)."""
    mine = [d for d in store.list_decisions(study.experiment_id) if d.study_id == study.id]
    if mine and all(json.dumps(mine[-1].stats.get(k)) == json.dumps(stats[k])
                    for k in ("candidate_values", "baseline_values")):
        return mine[-1]
    return None
