"""Device slots: one per GPU by default (or N per GPU), CPU slots when there is no GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its name, torch device, label shown to users and environment."""

    name: str
    device: str  # torch device inside the worker: "cuda" (pinned) or "cpu"
    label: str  # "gpu0", "cpu"
    env: tuple[tuple[str, str], ...]
    threads: int


def detect_gpus() -> list[str]:
    """GPU indices this process may use (honours CUDA_VISIBLE_DEVICES), without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip().isdigit()]
        except (OSError, subprocess.SubprocessError):
            return []
    if os.path.exists("/dev/nvidiactl"):  # a driver but no nvidia-smi: ask torch (slow import)
        try:
            import torch

            return [str(i) for i in range(torch.cuda.device_count())]
        except Exception:
            return []
    return []


def plan_slots(slots_per_gpu: int = 1, cpu_slots: int | None = None, gpus: list[str] | None = None) -> list[Slot]:
    """The engine's worker slots for this machine."""
    gpus = detect_gpus() if gpus is None else gpus
    cores = os.cpu_count() or 1
    if gpus:
        n = len(gpus) * max(1, slots_per_gpu)
        threads = max(1, cores // n)
        return [
            Slot(f"gpu{g}.{k}", "cuda", f"gpu{g}", (("CUDA_VISIBLE_DEVICES", g),), threads)
            for g in gpus for k in range(max(1, slots_per_gpu))
        ]
    n = max(1, cpu_slots if cpu_slots else min(cores, 8))
    threads = max(1, cores // n)
    return [Slot(f"cpu.{k}", "cpu", "cpu", (("CUDA_VISIBLE_DEVICES", ""),), threads) for k in range(n)]
