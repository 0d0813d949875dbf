"""Fused vs unfused trials *through the engine* (daemon, warm workers, SQLite workspace).

Each configuration gets a fresh workspace and engine; a one-trial warm-up study makes sure
the workers are up (torch imported, data loaded) before the measured study is enqueued.
Throughput = trials x max_train_steps / (last trial finished - enqueue), in trial-steps/s.

Run: python benchmarks/fused_engine.py            (CPU: the 32-trial study, fused vs unfused)
     python benchmarks/fused_engine.py --gpu      (the GPU check's configurations)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from engine.runner.control import start_engine, stop_engine
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import TrialState
from engine.workspace import launch_study

STUDY = """\
[study]
name = "{name}"
workload = "builtin:digits-mlp"
max_train_steps = {steps}
eval_every = {every}
budget = {budget}
fuse = {fuse}
seed = 0
[fixed]
optimizer = "adam"
width = {width}
depth = 2
batch_size = 64
[nuisance]
learning_rate = {{ low = 1e-4, high = 3e-2, scale = "log" }}
weight_decay = {{ low = 1e-6, high = 1e-3, scale = "log" }}
"""


def _fuse(fuse: str | int) -> str:
    return f'"{fuse}"' if isinstance(fuse, str) else str(fuse)


def measure(trials: int, fuse: str | int, steps: int, every: int, cpu_slots: int | None = None,
            slots_per_gpu: int = 1, repeats: int = 1) -> list[float]:
    """Wall seconds for a study of ``trials`` trials on a warm engine, ``repeats`` times one
    after another on the same engine."""
    project = Path(tempfile.mkdtemp())
    os.chdir(project)
    ws = project / ".tuneplay"
    store = open_store(ws)
    warm = parse_study(STUDY.format(name="warm", steps=2, every=1, budget=1, fuse='"off"', width=128))
    launch_study(store, warm)
    start_engine(ws, slots_per_gpu=slots_per_gpu, cpu_slots=cpu_slots)
    try:
        _wait(store)
        _savers_ready(ws)
        time.sleep(1.0)  # every worker idle and warm
        seconds = []
        for r in range(repeats):
            spec = parse_study(STUDY.format(
                name=f"measured-{r}", steps=steps, every=every, budget=trials, fuse=_fuse(fuse), width=128
            ))
            t0 = time.time()
            launch = launch_study(store, spec)
            _wait(store)
            done = [store.get_trial(t.id) for t in launch.new_trials]
            bad = [t for t in done if t.state != TrialState.COMPLETED]
            if bad:
                raise RuntimeError(f"{len(bad)} trials did not complete: {bad[0].state} {bad[0].error}")
            seconds.append(max(t.finished_at or t0 for t in done) - t0)
        return seconds
    finally:
        stop_engine(ws)


def _savers_ready(ws: Path, timeout: float = 60) -> None:
    """Wait until every worker that starts checkpoint savers (a GPU worker with spare
    cores) has them up: a warm engine. A fresh one saves in-process until they are."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        texts = [p.read_text(errors="replace") for p in (ws / "logs").glob("worker-*.log")]
        waiting = [t for t in texts if "checkpoint saver processes: 0" not in t and "savers ready" not in t]
        if texts and not waiting:
            return
        time.sleep(0.1)


def _wait(store, timeout: float = 1800) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not all(t.state.is_finished() for t in store.list_trials()):
        if time.time() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def row(label: str, trials: int, steps: int, runs: list[float], base: float | None) -> float:
    """Print the median of ``runs`` (and each run when there are several); its rate."""
    seconds = statistics.median(runs)
    rate = trials * steps / seconds
    ratio = f"{rate / base:7.1f}x" if base else "   1.0x"
    each = f"  (runs {', '.join(f'{r:.2f}' for r in runs)} s)" if len(runs) > 1 else ""
    print(f"  {label:<44} {seconds:8.2f} s  {rate:12,.0f} trial-steps/s  {ratio}{each}", flush=True)
    return rate


def cpu(args: argparse.Namespace) -> None:
    steps, n = args.steps, args.trials
    print(f"{n}-trial digits-mlp study, {steps} steps, 2 CPU workers, warm engine:")
    base = row("unfused (fuse = off)", n, steps, measure(n, "off", steps, 50, cpu_slots=2), None)
    for k in (8, 16):
        row(f"fused K={k}", n, steps, measure(n, k, steps, 50, cpu_slots=2), base)


def gpu(args: argparse.Namespace) -> None:
    steps = args.steps
    print(f"digits-mlp (64-128-128-10, batch 64, Adam), {steps} steps, one GPU, warm engine:")
    alone = measure(1, "off", steps, 50, repeats=3)
    base = row("one trial alone", 1, steps, alone, None)
    for k in (8, 32, 128, 512):
        row(f"fused K={k} (one worker)", k, steps, measure(k, k, steps, 50, repeats=3), base)
    for k in (8, 16):
        row(f"{k} concurrent unfused workers ({k} trials)", k, steps,
            measure(k, "off", steps, 50, slots_per_gpu=k, repeats=3), base)
    big = measure(512, "auto", steps, 50, repeats=3)
    row("512-trial study, fuse = auto", 512, steps, big, base)
    ratio = statistics.median(big) / statistics.median(alone)
    print(f"  512-trial study wall time / one trial alone: {ratio:.2f}x (target <= 3x; medians of 3)")


def gpu_quick(args: argparse.Namespace) -> None:
    """The GPU check's key figures only (for a short lease)."""
    steps = args.steps
    print(f"digits-mlp (64-128-128-10, batch 64, Adam), {steps} steps, one GPU, warm engine:")
    alone = measure(1, "off", steps, 50, repeats=3)
    base = row("one trial alone", 1, steps, alone, None)
    for k in (32, 512):
        row(f"fused K={k} (one worker)", k, steps, measure(k, k, steps, 50, repeats=3), base)
    big = measure(512, "auto", steps, 50, repeats=3)
    row("512-trial study, fuse = auto", 512, steps, big, base)
    ratio = statistics.median(big) / statistics.median(alone)
    print(f"  512-trial study wall time / one trial alone: {ratio:.2f}x (target <= 3x; medians of 3)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--quick", action="store_true", help="with --gpu: the key figures only")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--trials", type=int, default=32)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    (gpu_quick if args.gpu and args.quick else gpu if args.gpu else cpu)(args)


if __name__ == "__main__":
    main()
