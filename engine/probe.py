"""The batch-size throughput probe: examples/s and peak memory at powers of two until OOM.

The sizes run in a subprocess (an out-of-memory crash ends only the probe) through the
workload's ordinary training function, timed between steps with the evaluation steps left
out. One measurement is noise on a busy machine (a single slow spell once made 256 look
37% slower than 128 while 512 was 2.5x faster), so every size is measured ``ROUNDS`` times,
the rounds interleaved (a slow spell hits every size alike rather than one), each round's
throughput taken from its median step time, and each size's throughput is the median of
its rounds: the recommendation is made from medians. Each measurement times at least
``PROBE_STEPS`` steps and ``MIN_SECONDS``, with the threads a trial on that device gets
(one per CPU slot by default): torch's default of every core, on a shared machine, turned a
probe into a measure of the neighbours.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from engine.workloads.base import QuietTrial, WorkloadInfo
from engine.workloads.registry import load_train_function, resolve_workload

PROBE_STEPS = 20  # timed steps per measurement, at least ...
MIN_SECONDS = 0.3  # ... and at least this long: a few milliseconds of steps time the scheduler
MAX_STEPS = 500  # however fast the steps are
WARMUP_STEPS = 5
ROUNDS = 3  # measurements per batch size, interleaved across sizes; the median is kept
TIMEOUT_SECONDS = 900


class _ProbeTrial(QuietTrial):
    """A trial that times each training step, never evaluates after step 0, and stops once
    ``PROBE_STEPS`` steps and ``MIN_SECONDS`` were timed after the warm-up."""

    def __init__(self, device: str) -> None:
        super().__init__(WARMUP_STEPS + MAX_STEPS + 1, 10**9, 0, device)
        self.ticks: list[float] = []

    def should_stop(self) -> bool:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        self.ticks.append(time.perf_counter())
        timed = self.ticks[WARMUP_STEPS:]
        return len(timed) > PROBE_STEPS and timed[-1] - timed[0] >= MIN_SECONDS


def probe_one(info: WorkloadInfo, hp: Mapping[str, Any], batch_size: int, device: str) -> dict[str, Any]:
    """Throughput and peak memory of one batch size, in this process."""
    import torch

    train = load_train_function(info)
    trial = _ProbeTrial(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row: dict[str, Any] = {"batch_size": batch_size, "oom": False}
    try:
        train({**info.defaults(), **hp, "batch_size": batch_size}, trial)
    except torch.OutOfMemoryError:
        return {**row, "oom": True, "examples_per_s": None, "peak_mem_bytes": None}
    # ticks[i] is after step i; the steps after the warm-up are plain training steps (no eval)
    t = trial.ticks[WARMUP_STEPS:]
    seconds = statistics.median(b - a for a, b in itertools.pairwise(t))  # a stall is no rate
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {**row, "examples_per_s": batch_size / seconds, "peak_mem_bytes": float(peak),
            "step_ms": seconds * 1e3}


def batch_sizes_to_try(info: WorkloadInfo, max_batch: int) -> list[int]:
    high = max_batch
    hps = info.hyperparameters or {}
    if "batch_size" in hps and hps["batch_size"].high is not None:
        high = min(high, int(hps["batch_size"].high))
    sizes, b = [], 1
    while b <= high:
        sizes.append(b)
        b *= 2
    return sizes


def probe_batch(
    workload: str, hp: Mapping[str, Any] | None = None, max_batch: int = 4096,
    device: str | None = None, min_batch: int = 8,
) -> list[dict[str, Any]]:
    """Probe powers of two from ``min_batch`` up to ``max_batch`` or the first out-of-memory.

    One subprocess walks the sizes (paying the imports once); if it dies, the size it was on
    is recorded as out of memory and the walk stops there.
    """
    info = resolve_workload(workload)
    if not info.hyperparameters or "batch_size" not in info.hyperparameters:
        raise ValueError(f"workload {workload} declares no batch_size hyperparameter to probe")
    device = device or _default_device()
    sizes = [s for s in batch_sizes_to_try(info, max_batch) if s >= min_batch]
    cmd = [sys.executable, "-m", "engine.probe", "--workload", workload, "--hp", json.dumps(dict(hp or {})),
           "--device", device, "--sizes", ",".join(map(str, sizes)),
           "--threads", str(_slot_threads(device))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    rows = medians([json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")])
    done = {r["batch_size"] for r in rows}
    missing = [b for b in sizes if b not in done]
    if missing and not any(r.get("oom") for r in rows):
        error = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        rows.append({"batch_size": missing[0], "oom": True, "examples_per_s": None,
                     "peak_mem_bytes": None, "error": error or f"probe exited with {proc.returncode}"})
    return rows


def medians(measurements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per batch size from its rounds: the median examples/s and step time, the
    highest peak memory, every round's examples/s (``samples``); out of memory when its
    first measurement ran out (a later round only re-measures sizes that fit)."""
    by_size: dict[int, list[Mapping[str, Any]]] = {}
    for m in measurements:
        by_size.setdefault(int(m["batch_size"]), []).append(m)
    rows = []
    for size in sorted(by_size):
        ok = [m for m in by_size[size] if not m.get("oom") and m.get("examples_per_s")]
        if by_size[size][0].get("oom") or not ok:
            rows.append({**by_size[size][0], "batch_size": size, "oom": True,
                         "examples_per_s": None, "peak_mem_bytes": None})
            continue
        samples = [float(m["examples_per_s"]) for m in ok]
        rows.append({"batch_size": size, "oom": False,
                     "examples_per_s": statistics.median(samples),
                     "peak_mem_bytes": max(float(m.get("peak_mem_bytes") or 0) for m in ok),
                     "step_ms": statistics.median(float(m.get("step_ms", 0)) for m in ok),
                     "samples": samples})
    return rows


def _slot_threads(device: str) -> int:
    """The threads a trial on ``device`` trains with (one per CPU slot by default): the probe
    measures what a trial will see, and more threads than cores make every timing noise."""
    from engine.runner.slots import plan_slots

    try:
        slots = plan_slots()
    except ValueError:
        return 1
    return next((s.threads for s in slots if s.device == device), 1)


def _default_device() -> str:
    from engine.runner.slots import detect_gpus

    return "cuda" if detect_gpus() else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneplay-probe")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--hp", default="{}")
    parser.add_argument("--sizes", required=True, help="comma-separated batch sizes, ascending")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    info = resolve_workload(args.workload)
    sizes = [int(s) for s in args.sizes.split(",")]
    for round_ in range(args.rounds):  # rounds interleaved: a slow spell hits every size
        for size in sizes:
            row = probe_one(info, json.loads(args.hp), size, args.device)
            print(json.dumps({**row, "round": round_}), flush=True)
            if row["oom"]:
                sizes = sizes[: sizes.index(size)]  # later rounds measure what fits
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
