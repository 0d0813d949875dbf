"""Queued-to-first-step latency on a warm engine (workers up, torch imported).

Enqueues one trial at a time into a running engine and measures the time from the
enqueue's commit to the workload's first step. Targets: p50 < 100 ms, p99 < 250 ms.

Run: python benchmarks/engine_latency.py [N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import median, pct  # noqa: E402 (after sys.path)

from engine.runner.control import start_engine, stop_engine  # noqa: E402 (after sys.path)
from engine.spec import parse_study  # noqa: E402 (after sys.path)
from engine.store import open_store  # noqa: E402 (after sys.path)
from engine.store.base import NewTrial, TrialState  # noqa: E402 (after sys.path)
from engine.workspace import launch_study  # noqa: E402 (after sys.path)

STUDY = """\
[study]
name = "latency"
workload = "latency_workload:train"
max_train_steps = 1
eval_every = 1
budget = 1
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    project = Path(tempfile.mkdtemp())
    shutil.copy(HERE / "latency_workload.py", project / "latency_workload.py")
    os.chdir(project)
    ws = project / ".tuneplay"
    store = open_store(ws)
    launch = launch_study(store, parse_study(STUDY, str(project / "s.toml")))
    start_engine(ws, cpu_slots=2)
    try:
        _wait_done(store, launch.new_trials[0].id)  # warm: the engine and both workers are up
        time.sleep(1.0)
        lat = []
        for i in range(n):
            t = store.add_trials(launch.study.id, [NewTrial({"x": float(i)}, seed=i)])[0]
            _wait_done(store, t.id)
            first = next(r.value for r in store.read_metrics([t.id], names=["t_first_step"]))
            lat.append((first - t.created_at) * 1e3)
            time.sleep(0.05)
    finally:
        stop_engine(ws)
    print(f"queued-to-first-step latency on a warm engine, {n} trials, 2 CPU workers:")
    print(f"  p50 {median(lat):.1f} ms (target < 100)   p99 {pct(lat, 99):.1f} ms (target < 250)   "
          f"max {max(lat):.1f} ms")


def _wait_done(store, trial_id: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + 60
    while store.get_trial(trial_id).state != TrialState.COMPLETED:
        if time.time() > deadline:
            raise RuntimeError(f"trial {trial_id} did not complete: {store.get_trial(trial_id)}")
        time.sleep(0.002)


if __name__ == "__main__":
    main()
