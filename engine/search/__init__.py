"""Turn a study into trials: which hyperparameter values, which seed, in which order.

Per-value mode (the default, the fairest comparison): every nuisance point is tried once with
each scientific value, and those trials share the point index and the training seed, so a
difference between scientific values is never a difference in luck. Joint mode samples the
scientific hyperparameters as further dimensions of the same search.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from engine.space import ChoiceParam, Param
from engine.spec import StudySpec
from engine.store.base import NewTrial, Trial, TrialState


def trial_seed(study_seed: int, point_index: int) -> int:
    """The training seed of the trials at one search point (independent streams per point)."""
    import numpy as np

    return int(np.random.SeedSequence([study_seed, point_index]).generate_state(1)[0] % 2**31)


def scientific_combos(spec: StudySpec) -> list[dict[str, Any]]:
    """Each combination of scientific values compared side by side ([{}] when joint or none)."""
    if spec.scientific_mode != "per_value" or not spec.scientific:
        return [{}]
    choices = [p for p in spec.scientific if isinstance(p, ChoiceParam)]
    return [dict(zip([p.name for p in choices], combo)) for combo in itertools.product(*(p.values for p in choices))]


def sampled_dimensions(spec: StudySpec) -> tuple[Param, ...]:
    """The dimensions the search method samples (nuisance only in per-value mode)."""
    return spec.nuisance if spec.scientific_mode == "per_value" else spec.searched


def points_per_combo(spec: StudySpec) -> int:
    return max(1, spec.budget // len(scientific_combos(spec)))


def total_trials(spec: StudySpec) -> int:
    """The number of trials the study runs (the budget, rounded down to whole comparisons)."""
    return points_per_combo(spec) * len(scientific_combos(spec))


def quasi_random_trials(spec: StudySpec, start: int, n_points: int) -> list[NewTrial]:
    """Trials for search points ``start .. start+n_points-1``, in trial order."""
    from engine.search.quasi_random import halton_points  # scipy.stats: import on use

    combos = scientific_combos(spec)
    points = halton_points(sampled_dimensions(spec), spec.seed, start, n_points)
    out = []
    for offset, point in enumerate(points):
        index = start + offset
        for combo in combos:
            params = {**spec.fixed, **combo, **point}
            out.append(NewTrial(params=params, seed=trial_seed(spec.seed, index), point_index=index))
    return out


def preview(spec: StudySpec, n: int | None = None) -> list[dict[str, Any]]:
    """The searched values of the first ``n`` trials (default: the whole study), in trial order.

    For Bayesian search only the initial design is known before results come in.
    """
    n = total_trials(spec) if n is None else n
    per_point = len(scientific_combos(spec))
    if spec.search == "quasi_random":
        trials = quasi_random_trials(spec, 0, -(-n // per_point))
    else:
        trials = bayes_trials(spec, [], n, first_index=0)
    names = [p.name for p in spec.searched]
    return [{k: t.params[k] for k in names} for t in trials[:n]]


def bayes_trials(
    spec: StudySpec, existing: Sequence[Trial], n: int, first_index: int
) -> list[NewTrial]:
    """Ask the Bayesian optimizer for up to ``n`` trials, given the study's trials so far."""
    from engine.search.bayes import suggest

    combos = scientific_combos(spec)
    per_combo = points_per_combo(spec)
    dims = sampled_dimensions(spec)
    search_trials = [t for t in existing if t.kind == "search"]
    counts = [sum(1 for t in search_trials if _matches(t.params, c)) for c in combos]
    asks = [0] * len(combos)
    for _ in range(n):  # fill the least-tried comparison first
        room = [i for i, c in enumerate(counts) if c + asks[i] < per_combo]
        if not room:
            break
        i = min(room, key=lambda j: counts[j] + asks[j])
        asks[i] += 1
    out: list[NewTrial] = []
    index = first_index
    for combo, k in zip(combos, asks):
        if not k:
            continue
        mine = [t for t in search_trials if _matches(t.params, combo)]
        finished = [(t.params, _value(t)) for t in mine if t.state.is_finished() and t.state != TrialState.CANCELLED]
        pending = [t.params for t in mine if not t.state.is_finished()]
        budget = per_combo if spec.scientific_mode == "per_value" else spec.budget
        for point in suggest(dims, spec.seed, budget, spec.mode, finished, pending, k):
            params = {**spec.fixed, **combo, **point}
            out.append(NewTrial(params=params, seed=trial_seed(spec.seed, index), point_index=index))
            index += 1
    return out


def _matches(params: Any, combo: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in combo.items())


def _value(t: Trial) -> float | None:
    if t.state.is_infeasible() or t.best_value is None:
        return None
    return t.best_value
