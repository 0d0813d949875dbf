"""Turn a study into trials: which hyperparameter values, which seed, in which order.

Per-value mode (the default, the fairest comparison): every nuisance point is tried once with
each scientific value, and those trials share the point index and the training seed, so a
difference between scientific values is never a difference in luck. Joint mode samples the
scientific hyperparameters as further dimensions of the same search.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
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
    """Ask the Bayesian optimizer for up to ``n`` trials, given the study's trials so far
    (cold-started GP fits: :func:`bayes_batch` with no stored hyperparameters)."""
    return bayes_batch(spec, existing, n, first_index, {})[0]


def bayes_batch(
    spec: StudySpec,
    existing: Sequence[Trial],
    n: int,
    first_index: int,
    hyper: Mapping[str, Sequence[float]],
) -> tuple[list[NewTrial], dict[str, list[float]]]:
    """Up to ``n`` new trials, and the GP hyperparameters fitted for them.

    Args:
        hyper: the study's stored GP hyperparameters per comparison (:func:`load_gp_hyper`),
            the warm start of each fit; the caller stores the returned ones
            (``Storage.set_meta(gp_meta_key(study.id), ...)``) so a restart continues exactly.
    """
    from engine.search.bayes import suggest_batch

    combos = scientific_combos(spec)
    dims = sampled_dimensions(spec)
    budget = points_per_combo(spec) if spec.scientific_mode == "per_value" else spec.budget
    out: list[NewTrial] = []
    fitted: dict[str, list[float]] = {}
    index = first_index
    for combo, k in zip(combos, _asks(spec, existing, n)):
        if not k:
            continue
        finished, pending = _observed(existing, combo)
        key = _combo_key(combo)
        batch = suggest_batch(dims, spec.seed, budget, spec.mode, finished, pending, k,
                              theta=hyper.get(key))
        if batch.theta is not None:
            fitted[key] = batch.theta
        for point in batch.points:
            params = {**spec.fixed, **combo, **point}
            seed = trial_seed(spec.seed, index)
            out.append(NewTrial(params=params, seed=seed, point_index=index))
            index += 1
    return out, fitted


def _asks(spec: StudySpec, existing: Sequence[Trial], n: int) -> list[int]:
    """How many of ``n`` new trials go to each comparison: the least-tried one first."""
    combos = scientific_combos(spec)
    per_combo = points_per_combo(spec)
    search = [t for t in existing if t.kind == "search"]
    counts = [sum(1 for t in search if _matches(t.params, c)) for c in combos]
    asks = [0] * len(combos)
    for _ in range(n):
        room = [i for i, c in enumerate(counts) if c + asks[i] < per_combo]
        if not room:
            break
        i = min(room, key=lambda j: counts[j] + asks[j])
        asks[i] += 1
    return asks


def _observed(
    existing: Sequence[Trial], combo: dict[str, Any]
) -> tuple[list[tuple[Mapping[str, Any], float | None]], list[Mapping[str, Any]]]:
    """(params, value) of the comparison's finished search trials (cancelled ones left out),
    and the params of its pending ones."""
    mine = [t for t in existing if t.kind == "search" and _matches(t.params, combo)]
    finished = [(t.params, _value(t)) for t in mine
                if t.state.is_finished() and t.state != TrialState.CANCELLED]
    return finished, [t.params for t in mine if not t.state.is_finished()]


def gp_meta_key(study_id: int) -> str:
    """The storage meta key holding a Bayesian study's GP hyperparameters (JSON)."""
    return f"bayes_gp:{study_id}"


def load_gp_hyper(text: str | None) -> dict[str, list[float]]:
    """Stored GP hyperparameters per comparison; anything unreadable is a cold start."""
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: [float(x) for x in v] for k, v in raw.items()
            if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)}


def gp_protocol_note(spec: StudySpec, existing: Sequence[Trial]) -> str:
    """One line for a report's protocol: which finished trials the Bayesian search's GP saw
    (it is fitted on at most ``bayes.GP_CAP`` per comparison); "" for quasi-random search."""
    if spec.search != "bayesian":
        return ""
    from engine.search.bayes import surrogate_note

    combos = scientific_combos(spec)
    notes = [surrogate_note(len(_observed(existing, c)[0])) for c in combos]
    if len(combos) == 1:
        return notes[0]
    return "; ".join(f"{_combo_key(c)}: {note}" for c, note in zip(combos, notes))


def _combo_key(combo: Mapping[str, Any]) -> str:
    return json.dumps(dict(combo), sort_keys=True)


def _matches(params: Any, combo: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in combo.items())


def _value(t: Trial) -> float | None:
    if t.state.is_infeasible() or t.best_value is None:
        return None
    return t.best_value
