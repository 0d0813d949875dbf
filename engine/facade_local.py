"""The real :class:`engine.facade.EngineFacade`: one workspace on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import workspace as ws_ops
from engine.facade import DeviceUsage, ExperimentSummary, Snapshot, StudySummary
from engine.kinds import Search, TrialKind
from engine.runner.control import engine_status, host_runtime, start_engine, stop_engine
from engine.spec import StudySpec, load_study, parse_study, stored_study
from engine.status import best_trial, engine_hosts, rerun_progress
from engine.store import connect, redact_url
from engine.store.base import Baseline, Experiment, MetricRow, Study, Trial
from engine.trial_output import output_tail
from engine.workloads.command import CommandWorkload

_CONFIG_KEY = "engine.config"


class LocalFacade:
    """Reads and intents for one workspace folder (``.tuneplay/``)."""

    def __init__(self, workspace: Path, url: str | None = None) -> None:
        self.workspace = Path(workspace)  # with a shared store: the folder every host shares
        self.url = url
        self.store = connect(url, self.workspace)

    # -- reading ---------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self.url:
            return self._shared_snapshot()
        status = engine_status(self.workspace)
        slots = json.loads(self.store.get_meta("engine.slots") or "[]") if status.running else []
        experiments = []
        for exp in self.store.list_experiments():
            studies = tuple(self._summary(s) for s in self.store.list_studies(exp.id))
            experiments.append(ExperimentSummary(
                exp, tuple(self.store.list_baselines(exp.id)), studies,
                tuple(self.store.list_decisions(exp.id))))
        return Snapshot(str(self.workspace), status.running, status.pid, tuple(slots), tuple(experiments),
                        engine_note=status.disk_full if status.running else None)

    def _experiments(self) -> tuple[ExperimentSummary, ...]:
        return tuple(
            ExperimentSummary(exp, tuple(self.store.list_baselines(exp.id)),
                              tuple(self._summary(s) for s in self.store.list_studies(exp.id)),
                              tuple(self.store.list_decisions(exp.id)))
            for exp in self.store.list_experiments())

    def _shared_snapshot(self) -> Snapshot:
        """A shared store: the engine is every live host's; slots are named ``host/slot``."""
        hosts = engine_hosts(self.store)
        slots = tuple(f"{h['name']}/{s}" for h in hosts for s in h.get("slots", []))
        return Snapshot(redact_url(self.url or ""), bool(hosts), None, slots, self._experiments(),
                        hosts=tuple(h["name"] for h in hosts))

    def _summary(self, study: Study) -> StudySummary:
        trials = self.store.list_trials(study.id)
        best = best_trial(trials, stored_study(study).spec.mode)
        return StudySummary(study, dict(Counter(t.state.value for t in trials)), len(trials),
                            best.best_value if best else None, best.id if best else None,
                            rerun_progress(trials))

    def trials(self, study_id: int) -> list[Trial]:
        return self.store.list_trials(study_id)

    def curves(
        self, trial_ids: Sequence[int], metrics: Sequence[str] | None = None, since_step: int | None = None,
    ) -> list[MetricRow]:
        return self.store.read_metrics(trial_ids=list(trial_ids), names=list(metrics) if metrics else None,
                                       since_step=since_step)

    def devices(self) -> list[DeviceUsage]:
        """GPU utilisation and memory from nvidia-smi, or the CPU's load and memory."""
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=index,utilization.gpu,memory.used,memory.total",
                     "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
                return [DeviceUsage(f"gpu{i}", float(u), float(m) * 2**20, float(t) * 2**20)
                        for i, u, m, t in (ln.split(", ") for ln in out.strip().splitlines())]
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
        return [_cpu_usage()]

    def workloads(self) -> list[Any]:
        from engine.workloads.builtin import BUILTINS

        return list(BUILTINS.values())

    # -- engine ------------------------------------------------------------------------
    def _engine_config(self) -> dict[str, Any]:
        return json.loads(self.store.get_meta(_CONFIG_KEY) or "{}")

    def start_engine(self) -> None:
        """Start this machine's engine; with a shared store only when no host serves it (the
        app on a login node must not train: the hosts serving the store run its trials)."""
        if self.url and engine_hosts(self.store):
            return
        cfg = self._engine_config()
        start_engine(self.workspace, cfg.get("slots_per_gpu", 1), cfg.get("cpu_slots"), url=self.url)

    def set_slots(self, cpu_slots: int | None, slots_per_gpu: int) -> None:
        """Restart the engine with new slots (running trials checkpoint and resume)."""
        self.store.set_meta(_CONFIG_KEY, json.dumps({"cpu_slots": cpu_slots, "slots_per_gpu": slots_per_gpu}))
        stop_engine(host_runtime(self.workspace) if self.url else self.workspace)
        self.start_engine()

    # -- design and launch -------------------------------------------------------------
    def baseline_design(self, experiment_id: int) -> dict[str, Any]:
        exp = self.store.get_experiment(experiment_id)
        base = self.store.list_baselines(experiment_id)[-1]
        n = len(self.store.list_studies(experiment_id)) + 1
        lr = float(base.config.get("learning_rate", 1e-3) or 1e-3)
        fixed = {k: v for k, v in base.config.items() if k != "learning_rate"}
        study = {"name": f"{exp.name}-study-{n}", "workload": exp.workload, "experiment": exp.name,
                 "metric": base.metric,
                 "mode": base.mode, "max_train_steps": base.max_train_steps,
                 "eval_every": max(1, base.max_train_steps // 20), "budget": 16,
                 "search": Search.QUASI_RANDOM.value, "seed": 0}
        workload = ws_ops.experiment_workload(self.store, exp)
        if isinstance(workload, CommandWorkload):  # the whole table: cwd, args, stdout…
            study["workload"] = {k: v for k, v in workload.to_dict().items() if v or k == "args"}
        return {"study": study, "fixed": fixed,
                "nuisance": {"learning_rate": {"low": lr / 10, "high": lr * 10, "scale": "log"}},
                "scientific": {}}

    def validate_study_text(self, text: str, path: str) -> StudySpec:
        return parse_study(text, path)

    def preview(self, spec: StudySpec, n: int | None = None) -> list[dict[str, Any]]:
        from engine.search import preview

        return preview(spec, n)

    def save_and_launch(self, text: str, path: str) -> Study:
        """Validate, write the study file (atomically), then launch it."""
        parse_study(text, path)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return self.launch_file(str(target))

    def launch_file(self, path: str) -> Study:
        launch = ws_ops.launch_study(self.store, load_study(path))
        self.start_engine()
        return launch.study

    def run_baseline(self, experiment_id: int) -> Study:
        """A one-trial study of the latest baseline as it stands (does it beat chance?)."""
        exp = self.store.get_experiment(experiment_id)
        base = self.store.list_baselines(experiment_id)[-1]
        spec = StudySpec(
            name=f"{exp.name}-baseline-v{base.version}", workload=ws_ops.experiment_workload(self.store, exp),
            metric=base.metric, mode=base.mode, max_train_steps=base.max_train_steps,
            eval_every=max(1, base.max_train_steps // 20), budget=1, experiment=exp.name,
            goal=f"Run baseline v{base.version} once", fixed=dict(base.config),
        )
        launch = ws_ops.launch_study(self.store, spec, kind=TrialKind.BASELINE)
        self.start_engine()
        return launch.study

    def save_baseline(self, experiment_id: int, config: Mapping[str, Any], note: str = "") -> Baseline:
        """Launch the next baseline version with ``config`` (validated against the workload)."""
        from engine.workloads.registry import resolve_workload

        exp = self.store.get_experiment(experiment_id)
        base = self.store.list_baselines(experiment_id)[-1]
        info = resolve_workload(ws_ops.experiment_workload(self.store, exp))
        known = info.hyperparameters
        if known is not None:
            unknown = sorted(set(config) - set(known))
            if unknown:
                raise ValueError(f"{exp.workload} does not accept {', '.join(unknown)}")
        return self.store.add_baseline(experiment_id, {**base.config, **config}, base.metric, base.mode,
                                       base.max_train_steps, note=note or "edited in the app")

    def create_experiment(
        self, name: str, workload: str, config: Mapping[str, Any], metric: str, mode: str,
        max_train_steps: int,
    ) -> Experiment:
        from engine.workloads.registry import resolve_workload

        info = resolve_workload(ws_ops.workload_of_ref(workload))
        exp = self.store.create_experiment(name, info.ref)
        self.store.add_baseline(exp.id, {**info.defaults(), **config}, metric, mode, max_train_steps,
                                note="created in the app")
        return exp

    # -- trial controls ----------------------------------------------------------------
    def cancel(self, trial_ids: Sequence[int]) -> int:
        return ws_ops.cancel(self.store, trial_ids)

    def pause(self, trial_ids: Sequence[int]) -> int:
        return ws_ops.pause(self.store, trial_ids)

    def requeue(self, trial_ids: Sequence[int]) -> int:
        return ws_ops.requeue(self.store, trial_ids)

    def add_trials(self, study_id: int, n_points: int) -> int:
        return len(ws_ops.add_trials(self.store, self.store.get_study(study_id), n_points))

    # -- analysis and decisions ----------------------------------------------------------
    def analyze(self, study_id: int) -> Any:
        from engine.reporting import load_report

        return load_report(self.store, self.store.get_study(study_id)).report

    def rerun(self, study_id: int, best_k: int, seeds: int) -> int:
        from engine.decisions import plan_reruns

        plan = plan_reruns(self.store, self.store.get_study(study_id), best_k, seeds)
        self.start_engine()
        return len(plan.trials)

    def decide(self, study_id: int, adopt: bool = False) -> Any:
        from engine.decisions import decide

        return decide(self.store, self.store.get_study(study_id), adopt=adopt)

    def output_tail(self, trial_id: int, lines: int = 5) -> list[str]:
        """The last lines a command trial's program printed (the app's trial detail)."""
        return output_tail(self.workspace, trial_id, lines)

    def probe_batch(self, workload: str, max_batch: int = 1024) -> Any:
        from engine.analysis import recommend_batch_size
        from engine.probe import probe_batch

        return recommend_batch_size(probe_batch(workload, max_batch=max_batch))


def _cpu_usage() -> DeviceUsage:
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] / cores * 100
    mem: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            mem[key] = float(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    total = mem.get("MemTotal")
    used = total - mem.get("MemAvailable", 0.0) if total else None
    return DeviceUsage("cpu", min(100.0, load), used, total)
