"""The workspace facade: the intents the CLI and the TUI express, in the playbook's terms.

Creating a study from a spec (with its experiment and baseline), enqueuing its trials
without ever duplicating one, topping up Bayesian studies, and the trial controls
(cancel, pause, requeue, add trials). Everything goes through the storage protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.kinds import Search, TrialKind
from engine.search import (
    bayes_batch,
    gp_meta_key,
    load_gp_hyper,
    points_per_combo,
    quasi_random_trials,
    scientific_combos,
    total_trials,
    trial_seed,
)
from engine.spec import StoredStudy, StudySpec, spec_from_dict, stored_study
from engine.store.base import Experiment, NewTrial, Storage, StoreError, Study, Trial, TrialState
from engine.workloads.command import CommandWorkload

# Keys of a stored spec that may change when a study is continued from its file.
_MUTABLE_KEYS = {"budget", "goal", "source", "fuse", "target", "base_config", "baseline_version",
                 "workload_dir", "kind"}


class StudyConflict(StoreError):
    """A study file names an existing study but describes a different search, or an
    experiment that runs another workload; ``key`` is the study file's key at fault."""

    def __init__(self, message: str, key: str = "study.name") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Launch:
    """What ``launch_study`` did."""

    study: Study
    created: bool
    new_trials: list[Trial]


def ensure_experiment(store: Storage, spec: StudySpec) -> Experiment:
    """The spec's experiment; created with baseline v1 (workload defaults + fixed) if new."""
    exp = store.find_experiment(spec.experiment)
    if exp is not None:
        if exp.workload != spec.workload_ref:
            raise StudyConflict(
                f"experiment {exp.name!r} runs {exp.workload}, not {spec.workload_ref}; "
                "set [study] experiment to another name", key="study.experiment",
            )
        return exp
    exp = store.create_experiment(spec.experiment, spec.workload_ref)
    store.add_baseline(
        exp.id, {**_workload_defaults(spec), **spec.fixed}, spec.metric, spec.mode,
        spec.max_train_steps, note="initial baseline from the first study's fixed values",
    )
    return exp


def workload_of_ref(ref: str) -> str | CommandWorkload:
    """A workload from an experiment's one-string name. A command's argv is recovered by
    splitting on spaces, which only :func:`experiment_workload`'s fallback relies on."""
    if ref.startswith("command:"):
        return CommandWorkload(tuple(ref[len("command:"):].split(" ")))
    return ref


def experiment_workload(store: Storage, exp: Experiment) -> str | CommandWorkload:
    """The experiment's workload as its latest study ran it: for a command, the whole
    table (argv list, cwd, args, bools, resume, stdout), never argv re-split from its name."""
    if exp.workload.startswith("command:"):
        for study in reversed(store.list_studies(exp.id)):
            stored = study.spec.get("workload")
            if isinstance(stored, (list, dict)):
                return CommandWorkload.from_stored(stored)
    return workload_of_ref(exp.workload)


def _workload_defaults(spec: StudySpec) -> dict[str, Any]:
    from engine.workloads.registry import WorkloadError, resolve_workload

    try:
        return resolve_workload(spec.workload, base_dir=spec.workload_dir or None).defaults()
    except WorkloadError:
        return {}


def launch_study(
    store: Storage, spec: StudySpec, initial_bayes: int = 4, kind: TrialKind | None = None,
) -> Launch:
    """Create the study (or continue the stored one of that name) and enqueue its trials.
    ``kind=TrialKind.BASELINE`` marks a run of the baseline itself (stage 1), not a search."""
    existing = store.find_study(spec.name)
    stored = spec.to_dict()
    if existing is None:
        exp = ensure_experiment(store, spec)
        baseline = store.list_baselines(exp.id)[-1]
        stored = StoredStudy(spec, dict(baseline.config), baseline.version,
                             TrialKind(kind) if kind else None).to_dict()
        study = store.create_study(exp.id, spec.name, stored, spec.seed, source_path=spec.source)
        created = True
    else:
        _check_compatible(existing, stored)
        if stored_study(existing).spec.budget != spec.budget:
            merged = {**existing.spec, "budget": spec.budget, "goal": spec.goal}
            existing = store.update_study_spec(existing.id, merged)
        study, created = existing, False
    return Launch(study, created, enqueue(store, study, initial_bayes))


def _check_compatible(existing: Study, stored: Mapping[str, Any]) -> None:
    # read the stored spec back through the model, so keys added since it was stored
    # compare at their defaults
    old = {k: v for k, v in spec_from_dict(existing.spec).to_dict().items() if k not in _MUTABLE_KEYS}
    new = {k: v for k, v in stored.items() if k not in _MUTABLE_KEYS}
    if isinstance(existing.spec.get("workload"), list):  # stored before commands had a table
        w = new["workload"]
        old["workload"], new["workload"] = existing.spec["workload"], w.get("command") if isinstance(w, dict) else w
    diff = sorted(k for k in set(old) | set(new) if json.dumps(old.get(k)) != json.dumps(new.get(k)))
    if diff:
        raise StudyConflict(
            f"study {existing.name!r} exists with a different {', '.join(diff)}; "
            "give the changed study a new name (only budget and goal may change)"
        )


def study_spec(study: Study) -> StudySpec:
    return spec_from_dict(study.spec)


def enqueue(store: Storage, study: Study, initial_bayes: int = 4) -> list[Trial]:
    """Enqueue the trials the study still lacks (never one it already has)."""
    spec = study_spec(study)
    if spec.search == "quasi_random":
        missing = points_per_combo(spec) - study.next_index
        if missing <= 0:
            return []
        start = store.reserve_points(study.id, missing)
        return store.add_trials(study.id, _grouped(study, spec, quasi_random_trials(spec, start, missing)))
    existing = store.list_trials(study.id)
    pending = sum(1 for t in existing if not t.state.is_finished())
    return _ask_bayes(store, study, spec, existing, max(0, initial_bayes - pending))


def _ask_bayes(store: Storage, study: Study, spec: StudySpec, existing: Sequence[Trial], n: int) -> list[Trial]:
    ask = bayes_ask(study, spec, existing, n, load_gp_hyper(store.get_meta(gp_meta_key(study.id))))
    return commit_bayes(store, ask.compute()) if ask is not None else []


@dataclass(frozen=True)
class BayesAsk:
    """One Bayesian study's request for ``n`` new trials, with everything the search reads (a
    snapshot of what is stored), so :meth:`compute` touches no store and may run in another
    thread while the engine's loop carries on."""

    study: Study
    spec: StudySpec
    existing: tuple[Trial, ...]
    n: int
    hyper: Mapping[str, Sequence[float]]  # the study's stored GP hyperparameters (warm start)

    def compute(self) -> BayesProposal:
        """The GP fit and the batch (seconds at most: benchmarks/bayes_speed.py)."""
        new, fitted = bayes_batch(self.spec, self.existing, self.n, 0, self.hyper)
        return BayesProposal(self, tuple(new), fitted)


@dataclass(frozen=True)
class BayesProposal:
    """Trials a :class:`BayesAsk` proposes (point indices from 0, placed by :func:`commit_bayes`)
    and the GP hyperparameters fitted for them."""

    ask: BayesAsk
    trials: tuple[NewTrial, ...]
    fitted: Mapping[str, list[float]]


def bayes_ask(
    study: Study, spec: StudySpec, existing: Sequence[Trial], n: int,
    hyper: Mapping[str, Sequence[float]],
) -> BayesAsk | None:
    """A request for up to ``n`` trials, capped by the budget's room (None when there is none)."""
    searched = sum(1 for t in existing if t.kind == TrialKind.SEARCH)
    n = min(n, total_trials(spec) - searched)
    return BayesAsk(study, spec, tuple(existing), n, dict(hyper)) if n > 0 else None


def commit_bayes(
    store: Storage, proposal: BayesProposal, first: int = 0, count: int | None = None,
    add: Callable[[int, Sequence[NewTrial]], list[Trial]] | None = None,
) -> list[Trial]:
    """Store ``count`` of the proposed trials from ``first`` on (default: all), at freshly
    reserved point indices, and the fitted GP hyperparameters with the study: each fit
    warm-starts from the last, and a restarted engine reads the same ones, so it asks for the
    same batch. ``add`` stores the trials (default: queued for engines, tagged for fusion;
    ``tuneplay ask`` passes one that creates them already running)."""
    study, spec = proposal.ask.study, proposal.ask.spec
    chosen = proposal.trials[first:] if count is None else proposal.trials[first:first + count]
    added: list[Trial] = []
    if chosen:
        start = store.reserve_points(study.id, len(chosen))
        placed = [replace(t, point_index=start + i, seed=trial_seed(spec.seed, start + i))
                  for i, t in enumerate(chosen)]
        added = add(study.id, placed) if add else store.add_trials(study.id, _grouped(study, spec, placed))
    if proposal.fitted:
        key = gp_meta_key(study.id)
        stored = load_gp_hyper(store.get_meta(key))
        store.set_meta(key, json.dumps({**stored, **proposal.fitted}))
    return added


def occupies_slot(trial: Trial) -> bool:
    """Whether a trial holds (or waits for) an engine slot: queued, or running under a lease.
    Trials asked for with ``tuneplay ask`` run elsewhere: they count toward the budget and
    the search sees them as pending, but they leave the engine's slots free."""
    return trial.state == TrialState.QUEUED or (trial.state == TrialState.RUNNING and bool(trial.lease_token))


def bayes_top_up_asks(store: Storage, free_slots: int) -> list[BayesAsk]:
    """What each Bayesian study with room in its budget needs so that ``free_slots`` of its
    trials hold or wait for an engine slot (reads only; no GP fit)."""
    asks = []
    for study in store.list_studies():
        if stored_study(study).spec.search != Search.BAYESIAN:
            continue
        spec = study_spec(study)
        trials = store.list_trials(study.id)
        want = free_slots - sum(1 for t in trials if occupies_slot(t))
        ask = bayes_ask(study, spec, trials, want, load_gp_hyper(store.get_meta(gp_meta_key(study.id))))
        if ask is not None:
            asks.append(ask)
    return asks


def top_up_bayesian(store: Storage, free_slots: int) -> list[Trial]:
    """Ask Bayesian studies for more trials when results have come in and slots are idle, here
    and now (the engine computes them ahead instead: :mod:`engine.runner.suggest`)."""
    added: list[Trial] = []
    for ask in bayes_top_up_asks(store, free_slots):
        added += commit_bayes(store, ask.compute())
    return added


def add_trials(store: Storage, study: Study, n_points: int) -> list[Trial]:
    """Extend a study by ``n_points`` search points (each tried with every scientific value)."""
    spec = study_spec(study)
    per_point = len(scientific_combos(spec))
    budget = spec.budget + n_points * per_point
    study = store.update_study_spec(study.id, {**study.spec, "budget": budget})
    return enqueue(store, study, initial_bayes=n_points * per_point)


def enqueue_reruns(
    store: Storage, study: Study, configs: Sequence[Mapping[str, Any]], seeds: Sequence[int],
    label: TrialKind = TrialKind.RERUN,
) -> list[Trial]:
    """Enqueue each config once per seed (kind ``label``): the decision stage's seed reruns."""
    new = [NewTrial(params=dict(c), seed=s, kind=TrialKind(label)) for c in configs for s in seeds]
    return store.add_trials(study.id, _grouped(study, study_spec(study), new))


def _grouped(study: Study, spec: StudySpec, trials: Sequence[NewTrial]) -> list[NewTrial]:
    """Tag trials that can train fused together (same shapes, same workload)."""
    from engine.runner.grouping import with_group_keys

    return with_group_keys(spec, stored_study(study).base_config, trials)


def cancel(store: Storage, trial_ids: Sequence[int]) -> int:
    return store.set_state(trial_ids, TrialState.CANCELLED,
                           only_from=[TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED])


def pause(store: Storage, trial_ids: Sequence[int]) -> int:
    """Queued trials wait; running ones stop at their next check and resume on requeue."""
    return store.set_state(trial_ids, TrialState.PAUSED, only_from=[TrialState.QUEUED, TrialState.RUNNING])


def requeue(store: Storage, trial_ids: Sequence[int]) -> int:
    """Run paused, failed, diverged or cancelled trials again (resuming where a checkpoint exists)."""
    return store.set_state(
        trial_ids, TrialState.QUEUED,
        only_from=[TrialState.PAUSED, TrialState.FAILED, TrialState.DIVERGED, TrialState.CANCELLED],
    )
