"""A fake ``EngineFacade`` with a canned workspace, for Pilot tests, snapshots and benchmarks.

The workspace: experiment ``digits-mlp`` (baselines v1 and v2), a finished baseline run, a
finished 32-trial study ``wd-vs-none`` with seed reruns and a recorded ``adopt`` decision,
and (``running=True``) a study ``wd-longer`` with trials in every state. ``tick()`` moves the
running trials forward like an engine would. Analysis, previews, validation, reruns and
decisions are the real engine functions run on the fake's records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fake_data as fd
import numpy as np
from fake_store import FakeStore

from engine.analysis import analyze_study, curves_frame, recommend_batch_size, trials_frame
from engine.decisions import decide as real_decide
from engine.decisions import plan_reruns
from engine.facade import DeviceUsage, ExperimentSummary, Snapshot, StudySummary
from engine.search import points_per_combo, preview, quasi_random_trials
from engine.spec import StudySpec, parse_study, spec_from_dict
from engine.status import best_trial, rerun_progress
from engine.store.base import MetricRow, NewTrial, Study, Trial, TrialState
from engine.workloads.builtin import BUILTINS, OPTIMIZER_HPARAMS

S = TrialState
GPU_SLOTS = ("gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1")


class FakeFacade:
    """Implements :class:`engine.facade.EngineFacade` over :class:`FakeStore`; see module doc."""

    def __init__(self, workspace: Path | str = "/tmp/tuneplay-fake/.tuneplay", *,
                 running: bool = True, empty: bool = False) -> None:
        self.workspace = Path(workspace)
        self.now = fd.NOW - 2 * 3600.0
        self.store = FakeStore(lambda: self.now)
        self.engine_running = True
        self.unreachable = False
        self.slots: tuple[str, ...] = GPU_SLOTS
        self.hosts: tuple[str, ...] = ()  # engine hosts of a shared store (none: SQLite)
        self.steps_per_tick: int | None = None  # None: each trial's eval_every
        self.calls: list[tuple[str, Any]] = []
        self.saved: dict[str, str] = {}
        self.outputs: dict[int, list[str]] = {}  # trial id -> what its program printed
        self._specs: dict[int, StudySpec] = {}
        if not empty:
            _build_workspace(self, running)
        self.now = fd.NOW

    # ------------------------------------------------------------- test controls
    @classmethod
    def bench(cls, workspace: Path | str, n_trials: int = 500, start_step: int = 2000,
              steps_per_tick: int = 5) -> FakeFacade:
        """One study of ``n_trials`` trials, all running, each with ``start_step`` evals."""
        fake = cls(workspace, empty=True)
        exp = fake.store.create_experiment("digits-mlp", "builtin:digits-mlp")
        fake.store.add_baseline(exp.id, fd.BASELINE_V2, "val_error", "min", 100000)
        study = fake.launch_text(fd.BENCH_STUDY.format(budget=n_trials), "studies/bench.toml")
        fake.slots = tuple(f"gpu{i % 8}.{i // 8}" for i in range(n_trials))
        fake._fill_slots()
        for t in fake.store.list_trials(study.id):
            fake._advance(t, start_step)
        fake.steps_per_tick = steps_per_tick
        return fake

    def tick(self, n: int = 1) -> None:
        """Advance the clock and every running trial by one eval; fill freed slots."""
        for _ in range(n):
            self.now += fd.TICK_SECONDS
            for t in self.store.list_trials(states=[S.RUNNING]):
                spec = self.spec(t.study_id)
                self._advance(t, self.steps_per_tick or spec.eval_every)
            self._fill_slots()

    def spec(self, study_id: int) -> StudySpec:
        if study_id not in self._specs:
            self._specs[study_id] = spec_from_dict(self.store.studies[study_id].spec)
        return self._specs[study_id]

    # ------------------------------------------------------------- reads
    def snapshot(self) -> Snapshot:
        self._check_reachable()
        exps = []
        for exp in self.store.experiments.values():
            studies = tuple(self._summary(s) for s in self.store.studies.values()
                            if s.experiment_id == exp.id)
            exps.append(ExperimentSummary(exp, tuple(self.store.list_baselines(exp.id)), studies,
                                          tuple(self.store.list_decisions(exp.id))))
        return Snapshot(str(self.workspace), self.engine_running,
                        4242 if self.engine_running else None, self.slots, tuple(exps), self.now,
                        hosts=self.hosts)

    def trials(self, study_id: int) -> list[Trial]:
        self._check_reachable()
        return sorted(self.store.list_trials(study_id), key=lambda t: t.number)

    def curves(self, trial_ids: Sequence[int], metrics: Sequence[str] | None = None,
               since_step: int | None = None) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for tid in sorted(trial_ids):
            t = self.store.trial_rows.get(tid)
            if t is None:
                continue
            steps, values = self._curve(t)
            keep = steps >= since_step if since_step is not None else np.ones(len(steps), bool)
            for name in sorted(values):
                if metrics is None or name in metrics:
                    rows += [MetricRow(tid, int(s), name, float(v))
                             for s, v in zip(steps[keep], values[name][keep])]
        rows.sort(key=lambda r: (r.trial_id, r.step, r.name))
        return rows

    def output_tail(self, trial_id: int, lines: int = 5) -> list[str]:
        self.calls.append(("output_tail", trial_id))
        return self.outputs.get(trial_id, [])[-lines:] if lines > 0 else []

    def devices(self) -> list[DeviceUsage]:
        gpus = sorted({s.split(".")[0] for s in self.slots if s.startswith("gpu")})[:8]
        k = int(self.now // fd.TICK_SECONDS)
        return [DeviceUsage(g, float(70 + (7 * i + 3 * k) % 25), (20 + 4 * i) * 1e9, 80e9)
                for i, g in enumerate(gpus)]

    def workloads(self) -> list[Any]:
        return list(BUILTINS.values())

    def baseline_design(self, experiment_id: int) -> dict[str, Any]:
        exp = self.store.experiments[experiment_id]
        base = self.store.list_baselines(experiment_id)[-1]
        info = BUILTINS.get(exp.workload.split(":", 1)[-1])
        config = {**(info.defaults() if info else {}), **base.config}
        tuned = OPTIMIZER_HPARAMS.get(str(config.get("optimizer")), ("learning_rate",))
        nuisance = {name: _default_range(name, config[name]) for name in tuned if name in config}
        n = sum(1 for s in self.store.studies.values() if s.experiment_id == experiment_id)
        study = {"name": f"{exp.name}-{n + 1}", "workload": exp.workload, "experiment": exp.name,
                 "goal": "", "metric": base.metric, "mode": base.mode,
                 "max_train_steps": base.max_train_steps,
                 "eval_every": max(1, base.max_train_steps // 20), "budget": 16,
                 "search": "quasi_random", "seed": 0}
        fixed = {k: v for k, v in config.items() if k not in nuisance}
        return {"study": study, "fixed": fixed, "nuisance": nuisance, "scientific": {}}

    def validate_study_text(self, text: str, path: str) -> StudySpec:
        return parse_study(text, path)

    def preview(self, spec: Any, n: int | None = None) -> list[dict[str, Any]]:
        return preview(spec, n)

    def analyze(self, study_id: int) -> Any:
        trials = self.store.list_trials(study_id)
        rows = self.curves([t.id for t in trials if t.kind == "search"])
        return analyze_study(self.spec(study_id), trials_frame(trials), curves_frame(rows))

    def probe_batch(self, workload: str, max_batch: int = 1024) -> Any:
        self.calls.append(("probe_batch", workload))
        return recommend_batch_size(fd.PROBE_ROWS)

    # ------------------------------------------------------------- writes
    def start_engine(self) -> None:
        self.calls.append(("start_engine", None))
        self.engine_running = True

    def save_and_launch(self, text: str, path: str) -> Study:
        spec = parse_study(text, path)
        self.saved[path] = text
        self.calls.append(("save_and_launch", path))
        return self.launch_text(text, path, spec)

    def launch_file(self, path: str) -> Study:
        self.calls.append(("launch_file", path))
        return self.launch_text(Path(path).read_text(encoding="utf-8"), path)

    def launch_text(self, text: str, path: str, spec: StudySpec | None = None) -> Study:
        spec = spec or parse_study(text, path)
        existing = self.store.find_study(spec.name)
        if existing is not None:
            return existing
        exp = next((e for e in self.store.experiments.values() if e.name == spec.experiment), None)
        if exp is None:
            exp = self.store.create_experiment(spec.experiment, spec.workload_ref)
            self.store.add_baseline(exp.id, dict(spec.fixed), spec.metric, spec.mode,
                                    spec.max_train_steps, "initial baseline")
        base = self.store.list_baselines(exp.id)[-1]
        stored = {**spec.to_dict(), "base_config": dict(base.config),
                  "baseline_version": base.version}
        study = self.store.create_study(exp.id, spec.name, stored, spec.seed, path)
        self._enqueue_points(study, points_per_combo(spec))
        return self.store.studies[study.id]

    def cancel(self, trial_ids: Sequence[int]) -> int:
        self.calls.append(("cancel", tuple(trial_ids)))
        return self.store.set_state(trial_ids, S.CANCELLED, (S.QUEUED, S.RUNNING, S.PAUSED),
                                    finished_at=self.now)

    def pause(self, trial_ids: Sequence[int]) -> int:
        self.calls.append(("pause", tuple(trial_ids)))
        return self.store.set_state(trial_ids, S.PAUSED, (S.QUEUED, S.RUNNING))

    def requeue(self, trial_ids: Sequence[int]) -> int:
        self.calls.append(("requeue", tuple(trial_ids)))
        return self.store.set_state(trial_ids, S.QUEUED,
                                    (S.PAUSED, S.CANCELLED, S.FAILED, S.DIVERGED), error="")

    def add_trials(self, study_id: int, n_points: int) -> int:
        self.calls.append(("add_trials", (study_id, n_points)))
        return len(self._enqueue_points(self.store.studies[study_id], n_points))

    def set_slots(self, cpu_slots: int | None, slots_per_gpu: int) -> None:
        self.calls.append(("set_slots", (cpu_slots, slots_per_gpu)))
        self.slots = tuple(f"gpu{g}.{k}" for g in range(2) for k in range(slots_per_gpu))

    def rerun(self, study_id: int, best_k: int, seeds: int) -> int:
        self.calls.append(("rerun", (study_id, best_k, seeds)))
        return len(plan_reruns(self.store, self.store.studies[study_id], best_k, seeds).trials)

    def decide(self, study_id: int, adopt: bool = False) -> Any:
        self.calls.append(("decide", (study_id, adopt)))
        return real_decide(self.store, self.store.studies[study_id], adopt=adopt)

    def run_baseline(self, experiment_id: int) -> Study:
        self.calls.append(("run_baseline", experiment_id))
        exp = self.store.experiments[experiment_id]
        base = self.store.list_baselines(experiment_id)[-1]
        spec = {"name": f"{exp.name}-baseline-v{base.version}", "kind": "baseline",
                "workload": exp.workload, "metric": base.metric, "mode": base.mode,
                "max_train_steps": base.max_train_steps,
                "eval_every": max(1, base.max_train_steps // 20), "budget": 1,
                "search": "quasi_random", "seed": 0, "fixed": dict(base.config)}
        study = self.store.find_study(spec["name"]) or self.store.create_study(
            experiment_id, spec["name"], spec, 0)
        self.store.add_trials(study.id, [NewTrial(dict(base.config), 0)])  # a search of one, as the engine's
        return study

    def create_experiment(self, name: str, workload: str, config: Mapping[str, Any],
                          metric: str, mode: str, max_train_steps: int) -> Any:
        self.calls.append(("create_experiment", name))
        exp = self.store.create_experiment(name, workload)
        self.store.add_baseline(exp.id, dict(config), metric, mode, max_train_steps,
                                "initial baseline")
        return exp

    def save_baseline(self, experiment_id: int, config: Mapping[str, Any], note: str = "") -> Any:
        """Not in the Protocol yet: a new baseline version with ``config`` (stage 1 edits)."""
        self.calls.append(("save_baseline", dict(config)))
        last = self.store.list_baselines(experiment_id)[-1]
        return self.store.add_baseline(experiment_id, config, last.metric, last.mode,
                                       last.max_train_steps, note)

    # ------------------------------------------------------------- simulation
    def _check_reachable(self) -> None:
        if self.unreachable:
            raise ConnectionError("database is locked: cannot read .tuneplay/tuneplay.db")

    def _summary(self, study: Study) -> StudySummary:
        trials = self.store.list_trials(study.id)
        counts = Counter(t.state.value for t in trials)
        best = best_trial(trials, study.spec.get("mode", "min"))
        return StudySummary(study, dict(counts), len(trials),
                            best.best_value if best else None, best.id if best else None,
                            rerun_progress(trials))

    def _enqueue_points(self, study: Study, n_points: int) -> list[Trial]:
        spec = self.spec(study.id)
        new = quasi_random_trials(spec, study.next_index, n_points)
        self.store.update_study(study.id, next_index=study.next_index + n_points)
        return self.store.add_trials(study.id, new)

    def _fill_slots(self) -> None:
        busy = Counter(t.worker for t in self.store.list_trials(states=[S.RUNNING]))
        free = [s for s in self.slots if not busy.get(s)]
        queued = sorted(self.store.list_trials(states=[S.QUEUED]), key=lambda t: t.id)
        for slot, t in zip(free, queued):
            host = self.hosts[self.slots.index(slot) % len(self.hosts)] if self.hosts else ""
            self.store.update_trial(t.id, state=S.RUNNING, worker=slot, device=slot.split(".")[0],
                                    started_at=self.now, heartbeat_at=self.now,
                                    attempt=t.attempt + 1, host=host)

    def _advance(self, t: Trial, steps: int) -> None:
        spec = self.spec(t.study_id)
        horizon = t.max_train_steps
        done = min(t.steps_done + steps, horizon)
        blow = fd.diverge_step(t.params, spec.eval_every)
        if blow is not None and done >= blow:
            step, value = fd.best_so_far(t.params, t.id, blow - spec.eval_every,
                                         spec.eval_every, horizon, t.seed)
            self.store.update_trial(t.id, state=S.DIVERGED, steps_done=blow, best_step=step,
                                    best_value=value, finished_at=self.now,
                                    wall_time=blow / fd.STEPS_PER_SECOND,
                                    error=f"{spec.metric} is nan at step {blow}")
            return
        step, value = fd.best_so_far(t.params, t.id, done, spec.eval_every, horizon, t.seed)
        state = S.COMPLETED if done >= horizon else S.RUNNING
        # as the engine does: an attempt's seconds join wall_time when it ends
        wall = done / fd.STEPS_PER_SECOND if state == S.COMPLETED else t.wall_time
        self.store.update_trial(
            t.id, steps_done=done, best_step=step, best_value=value, heartbeat_at=self.now,
            wall_time=wall, state=state, finished_at=self.now if state == S.COMPLETED else None)

    def _curve(self, t: Trial) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        spec = self.spec(t.study_id)
        steps = fd.eval_steps(t.steps_done, spec.eval_every, t.max_train_steps)
        values = fd.curve(t.params, t.id, steps, t.max_train_steps, t.seed)
        if t.state == S.DIVERGED and len(steps):
            for v in values.values():
                v[-1] = np.nan
        return steps, values


def _default_range(name: str, value: Any) -> dict[str, Any]:
    """A first search range around a baseline value (log for rates, linear for decays)."""
    if name in ("momentum", "beta1"):
        return {"low": 0.8, "high": 0.99, "scale": "linear"}
    if name == "beta2":
        return {"low": 0.9, "high": 0.9999, "scale": "linear"}
    v = float(value) if value else 1e-3
    return {"low": v / 10, "high": v * 10, "scale": "log"}


def _build_workspace(fake: FakeFacade, running: bool) -> None:
    from fake_scenario import build

    build(fake, running)
