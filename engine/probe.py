"""The batch-size throughput probe: examples/s and peak memory at powers of two until OOM.

Each batch size runs in a fresh subprocess (so peak memory is its own and an out-of-memory
crash ends only that probe) through the workload's ordinary training function, timed
between steps with the evaluation steps left out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from engine.workloads.base import QuietTrial, WorkloadInfo
from engine.workloads.registry import load_train_function, resolve_workload

PROBE_STEPS = 25
WARMUP_STEPS = 5
TIMEOUT_SECONDS = 900


class _ProbeTrial(QuietTrial):
    """A trial that times each training step and never evaluates after step 0."""

    def __init__(self, steps: int, device: str) -> None:
        super().__init__(steps, 10**9, 0, device)
        self.ticks: list[float] = []

    def should_stop(self) -> bool:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        self.ticks.append(time.perf_counter())
        return False


def probe_one(info: WorkloadInfo, hp: Mapping[str, Any], batch_size: int, device: str) -> dict[str, Any]:
    """Throughput and peak memory of one batch size, in this process."""
    import torch

    train = load_train_function(info)
    trial = _ProbeTrial(PROBE_STEPS + WARMUP_STEPS + 1, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row: dict[str, Any] = {"batch_size": batch_size, "oom": False}
    try:
        train({**info.defaults(), **hp, "batch_size": batch_size}, trial)
    except torch.OutOfMemoryError:
        return {**row, "oom": True, "examples_per_s": None, "peak_mem_bytes": None}
    # ticks[i] is after step i; steps WARMUP..end-1 are plain training steps (no eval)
    t = trial.ticks[WARMUP_STEPS : WARMUP_STEPS + PROBE_STEPS + 1]
    seconds = (t[-1] - t[0]) / (len(t) - 1)
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
           "--device", device, "--sizes", ",".join(map(str, sizes))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    done = {r["batch_size"] for r in rows}
    missing = [b for b in sizes if b not in done]
    if missing and not any(r.get("oom") for r in rows):
        error = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        rows.append({"batch_size": missing[0], "oom": True, "examples_per_s": None,
                     "peak_mem_bytes": None, "error": error or f"probe exited with {proc.returncode}"})
    return rows


def _default_device() -> str:
    from engine.runner.slots import detect_gpus

    return "cuda" if detect_gpus() else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneplay-probe")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--hp", default="{}")
    parser.add_argument("--sizes", required=True, help="comma-separated batch sizes, ascending")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    info = resolve_workload(args.workload)
    for size in (int(s) for s in args.sizes.split(",")):
        row = probe_one(info, json.loads(args.hp), size, args.device)
        print(json.dumps(row), flush=True)
        if row["oom"]:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
