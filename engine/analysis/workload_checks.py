"""Findings about the workload itself, read off its trials: seed reruns that came out
identical (it ignores its seed) and steps reported past ``max_train_steps``.

The wording comes from :mod:`engine.trial_checks`, which ``tuneplay status`` and
``tuneplay decide`` use too, so all three say the same thing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.analysis.findings import SEED_IGNORED, STEPS_PAST_BUDGET, Finding, num
from engine.analysis.frames import HP_PREFIX, SEARCH_KIND, feasible_mask
from engine.kinds import TrialKind
from engine.spec import StudySpec
from engine.trial_checks import IdenticalReruns, identical, ignored_seed_message, step_overrun

BASELINE_KIND = TrialKind.BASELINE


def seed_ignored_finding(trials: pd.DataFrame, spec: StudySpec) -> Finding | None:
    """A warning when some group of seed reruns (one configuration, two or more seeds) gave
    exactly the same value on every seed; None when every group varies (or none exists)."""
    groups = _rerun_groups(trials)
    # the best step too: a coarse metric (an error rate) can agree by chance, rarely also
    # at the same step (``decide`` goes further and compares the whole curves)
    found = [(label, g) for label, g in groups if g["seed"].nunique() >= 2
             and identical(g["best_value"].tolist()) and g["best_step"].nunique() == 1]
    if not found:
        return None
    same = [IdenticalReruns(label, len(g), float(g["best_value"].iloc[0])) for label, g in found]
    ids = tuple(int(i) for _, g in found for i in g["trial_id"])
    evidence = {"groups": [{"label": s.label, "n_seeds": s.n, "value": num(s.value)} for s in same],
                "workload": spec.workload_ref}
    message = ignored_seed_message(same, spec.workload, spec.metric, lead="Seed reruns are identical: ")
    return Finding(SEED_IGNORED, "warn", message, "study", ids, evidence)


def _rerun_groups(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Completed seed reruns grouped by side and configuration, labelled "baseline" and
    "candidate" (or "candidate 1", "candidate 2"... in the order they were rerun)."""
    reruns = trials[feasible_mask(trials).to_numpy() & (trials["kind"] != SEARCH_KIND).to_numpy()]
    if reruns.empty:
        return []
    hp = [c for c in reruns.columns if c.startswith(HP_PREFIX)]
    keys = [json.dumps([kind, *row], default=str) for kind, row in
            zip(reruns["kind"], reruns[hp].astype(object).to_numpy().tolist())]
    grouped = sorted(reruns.groupby(np.asarray(keys), sort=False),
                     key=lambda kv: int(kv[1]["trial_id"].min()))
    n_candidates = sum(1 for _, g in grouped if g["kind"].iloc[0] != BASELINE_KIND)
    out, i = [], 0
    for _, g in grouped:
        if g["kind"].iloc[0] == BASELINE_KIND:
            out.append(("baseline", g))
            continue
        i += 1
        out.append(("candidate" if n_candidates == 1 else f"candidate {i}", g))
    return out


def steps_past_budget_finding(trials: pd.DataFrame, spec: StudySpec) -> Finding | None:
    """One warning for the whole study when trials reported steps at or past their
    ``max_train_steps``; their data stay in every other analysis."""
    steps, budget = trials["steps_done"].to_numpy(), trials["max_train_steps"].to_numpy()
    if not ((steps > budget) & (budget > 0)).any():
        return None  # the common case, without a Python loop over a large study's trials
    over = step_overrun(trials["trial_id"].tolist(), steps.tolist(), budget.tolist(), spec.workload)
    if over is None:
        return None
    evidence = {"n_over": over.n_over, "n_trained": over.n_trained,
                "max_train_steps": list(over.budgets), "last_step": over.last_step}
    return Finding(STEPS_PAST_BUDGET, "warn", over.message, "study", over.trial_ids, evidence)
