"""Plain-text progress and workspace summaries (the CLI's `status` and `run --wait`).

Below each study's line, ``status`` notes what needs a person: trials that ran past their
``max_train_steps`` (once per study) and the latest failures with their program's last lines.
"""

from __future__ import annotations

import heapq
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.failures import failed_trials, failure_lines, more_failed_line
from engine.space import format_value
from engine.store.base import Storage, Study, Trial, TrialState
from engine.trial_checks import step_overrun

FAILURES_SHOWN = 3  # per study: the latest few; `tuneplay export` has every error


@dataclass(frozen=True)
class StudyProgress:
    name: str
    metric: str
    mode: str
    counts: dict[str, int]
    total: int
    best: Trial | None
    eta_seconds: float | None
    reruns: tuple[int, int] = (0, 0)  # (finished, all) of its seed reruns, counted in ``total``

    @property
    def finished(self) -> bool:
        return self.total > 0 and sum(self.counts.get(s.value, 0) for s in TrialState if s.is_finished()) == self.total

    def line(self) -> str:
        done = sum(self.counts.get(s.value, 0) for s in TrialState if s.is_finished())
        parts = [f"{k.lower()} {v}" for k, v in self.counts.items() if v and k != "COMPLETED"]
        best = (f"best {self.metric} {format_value(self.best.best_value)} (#{self.best.id})"
                if self.best else f"best {self.metric} —")
        eta = f"ETA {_duration(self.eta_seconds)}" if self.eta_seconds is not None and not self.finished else ""
        return " · ".join(x for x in (
            f"{self.name}: {progress_text(done, self.total, self.reruns)}", ", ".join(parts), best, eta) if x)

    def summary(self) -> str:
        completed = self.counts.get("COMPLETED", 0)
        return f"study {self.name!r} finished: {completed} of {self.total} trials completed; " + (
            f"best {self.metric} {format_value(self.best.best_value)} (#{self.best.id})"
            if self.best else "no feasible result"
        )


def rerun_progress(trials: list[Trial]) -> tuple[int, int]:
    """(finished, all) of a study's seed reruns (of its best points and of the baseline)."""
    reruns = [t for t in trials if t.kind != "search"]
    return sum(1 for t in reruns if t.state.is_finished()), len(reruns)


def progress_text(done: int, total: int, reruns: tuple[int, int] = (0, 0)) -> str:
    """``32/32 done`` for the study's own trials, then ``· reruns 4/15`` once seeds are rerun:
    a budget of 32 stays 32 however many reruns follow."""
    rerun_done, rerun_total = reruns
    text = f"{done - rerun_done}/{total - rerun_total} done"
    return text + (f" · reruns {rerun_done}/{rerun_total}" if rerun_total else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def best_trial(trials: list[Trial], mode: str) -> Trial | None:
    feasible = [t for t in trials if t.best_value is not None and t.kind == "search"
                and not t.state.is_infeasible()]
    if not feasible:
        return None
    key = (lambda t: t.best_value) if mode == "min" else (lambda t: -t.best_value)  # type: ignore[operator]
    return min(feasible, key=key)


def study_progress(store: Storage, study_id: int) -> StudyProgress:
    return progress_of(store.get_study(study_id), store.list_trials(study_id))


def progress_of(study: Study, trials: list[Trial]) -> StudyProgress:
    counts = Counter(t.state.value for t in trials)
    return StudyProgress(
        name=study.name, metric=study.spec["metric"], mode=study.spec["mode"],
        counts={s.value: counts.get(s.value, 0) for s in TrialState}, total=_planned(study, trials),
        best=best_trial(trials, study.spec["mode"]), eta_seconds=estimate_eta(trials),
        reruns=rerun_progress(trials),
    )


def _planned(study: Study, trials: list[Trial]) -> int:
    """Trials the study will have: a Bayesian study adds its trials a batch at a time, so
    "4/4 done" before its top-up would call a 20-trial budget finished."""
    from engine.search import total_trials
    from engine.spec import spec_from_dict

    searched = sum(1 for t in trials if t.kind == "search")
    try:
        budget = total_trials(spec_from_dict(study.spec))
    except (KeyError, TypeError, ValueError):
        budget = searched
    return len(trials) + max(0, budget - searched)


def step_rate(trial: Trial) -> float | None:
    """Measured training steps per second of one trial (None until there is a measurement).

    A finished attempt adds its seconds to ``wall_time``; a running one is timed from its
    start to its latest heartbeat. Both together cover every attempt of a resumed trial."""
    seconds = trial.wall_time
    if trial.state == TrialState.RUNNING and trial.started_at and trial.heartbeat_at:
        seconds += max(trial.heartbeat_at - trial.started_at, 0.0)
    if trial.steps_done <= 0 or seconds <= 0:
        return None
    return trial.steps_done / seconds


def estimate_eta(trials: list[Trial], now: float | None = None,
                 slots: int | None = None) -> float | None:
    """Seconds until every running and queued trial has finished, from measured step rates.

    Each running trial keeps its slot until its remaining steps are done at its own rate
    (less the time since its last heartbeat); each queued trial then takes the slot that
    frees first, at the median rate measured so far. ``slots`` defaults to the trials
    running now. Paused trials wait for a person and are not counted. None while nothing is
    left or no rate has been measured yet.
    """
    now = time.time() if now is None else now
    rates = {t.id: r for t in trials if (r := step_rate(t)) is not None}
    running = [t for t in trials if t.state == TrialState.RUNNING]
    queued = [t for t in trials if t.state == TrialState.QUEUED]
    n_slots = max(slots or len(running), len(running))
    if not rates or not n_slots or not (running or queued):
        return None
    typical = statistics.median(rates.values())
    free = [max(_left(t) / rates.get(t.id, typical) - max(now - (t.heartbeat_at or now), 0.0), 0.0)
            for t in running] + [0.0] * (n_slots - len(running))
    heapq.heapify(free)
    for t in sorted(queued, key=lambda t: t.id):
        heapq.heappush(free, heapq.heappop(free) + _left(t) / typical)
    return max(free)


def _left(trial: Trial) -> int:
    return max(trial.max_train_steps - trial.steps_done, 0)


def engine_hosts(store: Any) -> list[dict[str, Any]]:
    """The engine hosts serving a shared store now (their records are refreshed every second;
    one older than HOST_ALIVE_SECONDS by the store's clock is gone), by name."""
    from engine.runner.hosts import HOST_ALIVE_SECONDS

    now = store.db_time()
    hosts = []
    for key, raw in store.list_meta("engine.host.").items():
        try:
            record = json.loads(raw)
            if now - float(record["at"]) <= HOST_ALIVE_SECONDS:
                hosts.append({**record, "name": key[len("engine.host."):]})
        except (ValueError, KeyError, TypeError):
            continue
    return hosts


def hosts_line(hosts: list[dict[str, Any]]) -> str:
    """``3 hosts · 24 slots`` (or ``no engine host is serving``)."""
    if not hosts:
        return "no engine host is serving"
    slots = sum(len(h.get("slots", [])) for h in hosts)
    return f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} · {slots} slot{'s' if slots != 1 else ''}"


def workspace_summary(workspace: Path, url: str | None = None) -> str:
    from engine.runner.control import engine_status
    from engine.store import connect, redact_url

    store = connect(url, workspace)
    if url:
        hosts = engine_hosts(store)
        lines = [f"store {redact_url(url)} · shared folder {workspace}", f"engine: {hosts_line(hosts)}"]
        running = Counter(t.host for t in store.list_trials(states=[TrialState.RUNNING]))
        for h in sorted(hosts, key=lambda h: h["name"]):
            role = " · coordinator" if h.get("coordinator") else ""
            n = len(h.get("slots", []))
            lines.append(f"  host {h['name']}: {n} slot{'s' if n != 1 else ''}, {running.get(h['name'], 0)} "
                         f"trials running{role}")
    else:
        status = engine_status(workspace)
        lines = [f"workspace {workspace}", f"engine: {status.describe()}"]
        if status.disk_full and not status.running:
            lines.append(status.disk_full)
    header = len(lines)
    for exp in store.list_experiments():
        baselines = store.list_baselines(exp.id)
        version = f"baseline v{baselines[-1].version}" if baselines else "no baseline"
        lines.append(f"experiment {exp.name} ({exp.workload}) · {version}")
        for study in store.list_studies(exp.id):
            trials = store.list_trials(study.id)
            lines.append("  " + progress_of(study, trials).line())
            lines += study_notes(workspace, study, trials, indent="    ")
        decisions = store.list_decisions(exp.id)
        if decisions:
            d = decisions[-1]
            lines.append(f"  latest decision: {d.verdict.upper()} — {d.rationale}")
    if len(lines) == header:
        lines.append("no experiments yet (run `tuneplay run FILE`)")
    return "\n".join(lines)


def study_notes(workspace: Path | None, study: Study, trials: list[Trial], indent: str = "") -> list[str]:
    """What needs a person in one study: steps past the budget (one line for the whole
    study, however many trials did it), then its latest failures with their output tails."""
    lines = []
    over = step_overrun([t.id for t in trials], [t.steps_done for t in trials],
                        [t.max_train_steps for t in trials], study.spec.get("workload"))
    if over is not None:
        lines.append(f"{indent}▲ {over.message}")
    failures, total = failed_trials(workspace, trials, FAILURES_SHOWN)
    for failure in failures:
        lines += failure_lines(failure, indent)
    more = more_failed_line(len(failures), total, study.name, indent)
    return lines + ([more] if more else [])
