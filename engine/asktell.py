"""Ask/tell: trials run by anything (a cluster script, a notebook), recorded in the workspace.

``create`` registers a study without queueing a trial; ``ask`` hands out the study's next
trials (its own quasi-random points or Bayesian suggestions), created already RUNNING outside
any engine (``Storage.add_running``: no lease, so no engine claims, expires or requeues
them); ``tell`` records their results the way a worker would, so analysis, report, rerun
and decide read them like any other trial. A told NaN or inf is DIVERGED, as the trial API
makes it.

Bad input (an unknown trial, one of another study, one already finished or running in an
engine, a malformed line) is one line naming the file and line, and nothing is recorded:
a results file is checked whole before anything is written. The write itself is two store
calls (every curve row, then every trial's end); if the process dies between them the
trials stay RUNNING with their rows, and telling the same file again completes it (rows are
upserted, one per trial, step and metric).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.cli import UserError
from engine.kinds import Mode, Search, TrialKind
from engine.search import points_per_combo, quasi_random_trials, scientific_combos, total_trials
from engine.spec import StudySpec, stored_study
from engine.store.base import (
    MetricRow,
    NewTrial,
    Storage,
    StoreError,
    Study,
    Trial,
    TrialProgress,
    TrialState,
)

ASK_WORKER = "ask"  # the worker name of asked trials
MAX_ASK = 10_000
TOLD_STATES = {"failed": TrialState.FAILED, "diverged": TrialState.DIVERGED}
RESULT_KEYS = ("value", "curve", "state")  # one of them per line of a results file


@dataclass(frozen=True)
class Told:
    """One trial's told result: its end as a worker would record it, and its curve."""

    trial: Trial
    progress: TrialProgress
    rows: tuple[MetricRow, ...] = ()

    def line(self, metric: str) -> str:
        """``trial 12: COMPLETED, val_error 0.118`` for the command's output."""
        state = self.progress.state.value
        best = self.progress.best_value
        return f"trial {self.trial.id}: {state}" + (f", {metric} {best:.6g}" if best is not None else "")


# -- create ------------------------------------------------------------------------------
def create_study(store: Storage, spec: StudySpec) -> tuple[Study, bool]:
    """Register the study (with its experiment and baseline, as ``launch_study`` does) without
    queueing a trial; an existing study of that name is continued (only budget and goal may
    change). Returns the study and whether it was created."""
    from engine.workspace import _check_compatible, ensure_experiment

    stored = spec.to_dict()
    existing = store.find_study(spec.name)
    if existing is not None:
        _check_compatible(existing, stored)
        if stored_study(existing).spec.budget != spec.budget:
            existing = store.update_study_spec(existing.id, {**existing.spec, "budget": spec.budget, "goal": spec.goal})
        return existing, False
    exp = ensure_experiment(store, spec)
    baseline = store.list_baselines(exp.id)[-1]
    stored["base_config"] = dict(baseline.config)
    stored["baseline_version"] = baseline.version
    return store.create_study(exp.id, spec.name, stored, spec.seed, source_path=spec.source), True


# -- ask ---------------------------------------------------------------------------------
def ask(store: Storage, study: Study, n: int) -> list[Trial]:
    """Up to ``n`` new trials from the study's own search, created RUNNING for ``ask``.

    Quasi-random search hands out whole search points (each with every scientific value in
    per-value mode, so ``n`` rounds up to whole comparisons); Bayesian search asks the GP
    with every unfinished trial pending, as the engine does. Never beyond the budget.

    Raises:
        UserError: ``n`` out of range, or the budget is spent.
    """
    from engine.workspace import study_spec

    if not 1 <= n <= MAX_ASK:
        raise UserError(f"--n: must be between 1 and {MAX_ASK}, got {n}")
    spec = study_spec(study)
    existing = store.list_trials(study.id)
    searched = sum(1 for t in existing if t.kind == TrialKind.SEARCH)
    if searched >= total_trials(spec):
        raise UserError(f"study {study.name!r} has all {total_trials(spec)} trials of its budget; "
                        "raise [study] budget in its file and `tuneplay create FILE` again")
    if spec.search == Search.BAYESIAN:
        return _ask_bayes(store, study, spec, existing, n)
    per_point = len(scientific_combos(spec))
    points = min(-(-n // per_point), points_per_combo(spec) - study.next_index)
    if points <= 0:
        raise UserError(f"study {study.name!r}: every point of its budget was handed out")
    start = store.reserve_points(study.id, points)
    return store.add_running(study.id, quasi_random_trials(spec, start, points), worker=ASK_WORKER)


def _ask_bayes(store: Storage, study: Study, spec: StudySpec, existing: Sequence[Trial], n: int) -> list[Trial]:
    from engine.search import gp_meta_key, load_gp_hyper
    from engine.workspace import bayes_ask, commit_bayes

    request = bayes_ask(study, spec, existing, n, load_gp_hyper(store.get_meta(gp_meta_key(study.id))))
    if request is None:
        return []

    def running(study_id: int, trials: Sequence[NewTrial]) -> list[Trial]:
        return store.add_running(study_id, trials, worker=ASK_WORKER)

    return commit_bayes(store, request.compute(), add=running)


def asked_rows(study: Study, trials: Sequence[Trial]) -> list[dict[str, Any]]:
    """What a trial runner needs of each asked trial: id, training seed, training length and
    the whole config (the baseline's values under the trial's own)."""
    base = dict(stored_study(study).base_config)
    return [{"trial": t.id, "seed": t.seed, "max_train_steps": t.max_train_steps,
             "params": {**base, **t.params}} for t in trials]


# -- tell --------------------------------------------------------------------------------
def told_trial(store: Storage, study: Study, trial_id: int) -> Trial:
    """The asked trial ``trial_id`` of ``study``, still waiting for its result.

    Raises:
        UserError: no such trial, another study's, already finished, or not an asked one.
    """
    try:
        trial = store.get_trial(int(trial_id))
    except StoreError:
        raise UserError(f"trial {trial_id}: no such trial") from None
    if trial.study_id != study.id:
        other = store.get_study(trial.study_id).name
        raise UserError(f"trial {trial_id} belongs to study {other!r}, not {study.name!r}")
    if trial.state.is_finished():
        raise UserError(f"trial {trial_id} is already {trial.state.value}; a result is told once")
    if trial.state != TrialState.RUNNING or trial.lease_token or trial.worker != ASK_WORKER:
        raise UserError(f"trial {trial_id} is {trial.state.value} in an engine, not asked for: "
                        "only trials handed out by `tuneplay ask` take told results")
    return trial


def parse_value(text: str) -> float:
    """A told value from the command line (``nan`` and ``inf`` are values: DIVERGED)."""
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--value {text!r}: not a number") from None


def from_value(trial: Trial, value: float) -> Told:
    """A final value with no curve: COMPLETED at it, or DIVERGED if it is NaN or inf. The
    trial counts as trained for its whole ``max_train_steps``; its best step is unknown."""
    value = float(value)
    if not math.isfinite(value):
        return Told(trial, _end(trial, TrialState.DIVERGED, error=f"told value {value}"))
    return Told(trial, _end(trial, TrialState.COMPLETED, best_value=value, steps=trial.max_train_steps))


def from_state(trial: Trial, state: str) -> Told:
    """A trial that failed or diverged without a value worth keeping."""
    key = state.lower()
    if key not in TOLD_STATES:
        raise UserError(f"--state {state!r}: expected one of {', '.join(TOLD_STATES)}")
    return Told(trial, _end(trial, TOLD_STATES[key], error=f"told {key}"))


def from_curve(trial: Trial, metric: str, mode: str, points: Sequence[tuple[int, Mapping[str, float]]],
               where: str) -> Told:
    """A whole curve, judged as a worker judges one: the best ``metric`` value until the first
    non-finite value of any metric, which makes the trial DIVERGED.

    Raises:
        UserError: the study's metric appears nowhere (``where`` names the file).
    """
    latest: dict[tuple[int, str], float] = {}
    for step, values in points:
        for name, value in values.items():
            latest[(step, name)] = value  # a re-reported step replaces the earlier one
    if not any(name == metric for _, name in latest):
        raise UserError(f"{where}: no {metric!r} values (the study's metric)")
    rows = tuple(MetricRow(trial.id, step, name, v) for (step, name), v in sorted(latest.items()))
    best_step, best, diverged = None, None, ""
    sign = Mode(mode).sign
    for row in rows:
        if not math.isfinite(row.value):
            diverged = f"{row.name} = {row.value} at step {row.step}"
            break
        if row.name == metric and (best is None or sign * row.value < sign * best):
            best_step, best = row.step, row.value
    steps = max(step for step, _ in latest) + 1
    state = TrialState.DIVERGED if diverged else TrialState.COMPLETED
    return Told(trial, _end(trial, state, best_value=best, best_step=best_step, steps=steps, error=diverged), rows)


def _end(trial: Trial, state: TrialState, best_value: float | None = None, best_step: int | None = None,
         steps: int = 0, error: str = "") -> TrialProgress:
    """The trial's end; its wall time is the time from ``ask`` to ``tell``."""
    wall = max(0.0, time.time() - trial.started_at) if trial.started_at else 0.0
    return TrialProgress(state=state, best_step=best_step, best_value=best_value, steps_done=steps,
                         wall_time=wall, error=error)


def read_curve(path: str) -> list[tuple[int, dict[str, float]]]:
    """A metrics file: JSON lines ``{"step": 10, "val_error": 0.12, ...}`` (blank lines skipped).

    Raises:
        UserError: ``FILE:LINE: reason`` for the first malformed line.
    """
    return [_curve_point(obj, f"{path}:{n}") for n, obj in _json_lines(path)]


def read_results(store: Storage, study: Study, path: str) -> list[Told]:
    """A results file, checked whole: JSON lines ``{"trial": ID, "value": V}`` (or ``"curve":
    [{"step": ..., "<metric>": ...}, ...]``, or ``"state": "failed"|"diverged"``).

    Raises:
        UserError: ``FILE:LINE: reason`` for the first bad line (a malformed one, an unknown
            trial, another study's, one finished already or told twice in the file).
    """
    spec = stored_study(study).spec
    metric, mode = spec.metric, spec.mode
    told: list[Told] = []
    seen: dict[int, int] = {}
    for n, obj in _json_lines(path):
        where = f"{path}:{n}"
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected an object like {{\"trial\": 12, \"value\": 0.5}}")
        trial_id = _trial_id(obj, where)
        given = [k for k in RESULT_KEYS if k in obj]
        unknown = sorted(set(obj) - {"trial", *RESULT_KEYS})
        if unknown or len(given) != 1:
            raise UserError(f"{where}: give \"trial\" and one of \"value\", \"curve\", \"state\""
                            + (f" (unknown key {unknown[0]!r})" if unknown else ""))
        if trial_id in seen:
            raise UserError(f"{where}: trial {trial_id} is told twice (first on line {seen[trial_id]})")
        seen[trial_id] = n
        try:
            trial = told_trial(store, study, trial_id)
            told.append(_result(trial, given[0], obj[given[0]], metric, mode, where))
        except UserError as exc:
            text = str(exc)
            raise UserError(text if text.startswith(where) else f"{where}: {text}") from None
    if not told:
        raise UserError(f"{path}: no results in it")
    return told


def _result(trial: Trial, key: str, raw: Any, metric: str, mode: str, where: str) -> Told:
    if key == "value":
        return from_value(trial, _number(raw, f"{where}: value"))
    if key == "state":
        if not isinstance(raw, str):
            raise UserError(f"{where}: state: expected \"failed\" or \"diverged\"")
        return from_state(trial, raw)
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where}: curve: expected a list of {{\"step\": ..., \"{metric}\": ...}}")
    points = [_curve_point(p, f"{where}: curve[{i}]") for i, p in enumerate(raw)]
    return from_curve(trial, metric, mode, points, where)


def record(store: Storage, told: Sequence[Told]) -> None:
    """Write every curve row, then every trial's end (one call each); a trial finished by
    someone else meanwhile keeps that end.

    Raises:
        StoreError: some trial was finished meanwhile (its own end was kept).
    """
    rows = [row for t in told for row in t.rows]
    if rows:
        store.write_metrics(rows)
    done = set(store.finish_trials([(t.trial.id, t.progress) for t in told]))
    missed = [t.trial.id for t in told if t.trial.id not in done]
    if missed:
        raise StoreError(f"trial {missed[0]} was finished by someone else meanwhile; its result "
                         f"was not recorded ({len(told) - len(missed)} others were)")


def _json_lines(path: str) -> Iterator[tuple[int, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{n}: not JSON ({exc.args[0].split(':')[0]})") from None


def _curve_point(obj: Any, where: str) -> tuple[int, dict[str, float]]:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object like {{\"step\": 10, \"val_error\": 0.12}}")
    step = obj.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{where}: step: expected a whole number >= 0, got {json.dumps(step)}")
    values = {str(k): _number(v, f"{where}: {k}") for k, v in obj.items() if k != "step"}
    if not values:
        raise UserError(f"{where}: no metric values beside the step")
    return step, values


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise UserError(f"{where}: expected a number, got {json.dumps(raw)}")
    return float(raw)


def _trial_id(obj: Mapping[str, Any], where: str) -> int:
    raw = obj.get("trial")
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise UserError(f"{where}: trial: expected a trial id (a whole number), got {json.dumps(raw)}")
    return raw
