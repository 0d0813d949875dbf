"""Device slots: one per GPU by default (or N per GPU), CPU slots when there is no GPU.

A study with ``gpus_per_trial = N > 1`` needs slots of N GPUs each: the engine then plans
``len(gpus) // N`` such slots (leftover GPUs idle) and replans as studies need.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from engine.spec import stored_study
from engine.store.base import Storage, Study, TrialState

GPUS_PER_TRIAL_KEY = "study.gpus_per_trial"


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its name, torch device, label shown to users and environment."""

    name: str
    device: str  # torch device inside the worker: "cuda" (pinned) or "cpu"
    label: str  # "gpu0", "gpu0-1", "cpu"
    env: tuple[tuple[str, str], ...]
    threads: int

    @property
    def gpus(self) -> list[str]:
        """The GPUs this slot's worker sees (none for a CPU slot)."""
        if self.device != "cuda":
            return []
        visible = dict(self.env).get("CUDA_VISIBLE_DEVICES", "")
        return [g for g in visible.split(",") if g.strip()]

    @property
    def width(self) -> int:
        """The largest ``gpus_per_trial`` this slot runs (a CPU slot runs width-1 trials)."""
        return max(1, len(self.gpus))


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


def plan_slots(
    slots_per_gpu: int = 1, cpu_slots: int | None = None, gpus: Sequence[str] | None = None,
    gpus_per_trial: int = 1,
) -> list[Slot]:
    """The engine's worker slots for this machine, each wide enough for ``gpus_per_trial``.

    Raises:
        ValueError: this host has fewer GPUs than ``gpus_per_trial`` (see :func:`gpus_shortfall`).
    """
    gpus = detect_gpus() if gpus is None else list(gpus)
    shortfall = gpus_shortfall(gpus_per_trial, gpus)
    if shortfall:
        raise ValueError(f"{GPUS_PER_TRIAL_KEY}: {shortfall}")
    cores = os.cpu_count() or 1
    if gpus and gpus_per_trial > 1:
        return _wide_slots(gpus, gpus_per_trial, cores)
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


def _wide_slots(gpus: Sequence[str], width: int, cores: int) -> list[Slot]:
    """One slot per ``width`` consecutive GPUs; GPUs left over idle (a trial needs all N)."""
    groups = [list(gpus[i:i + width]) for i in range(0, len(gpus) - width + 1, width)]
    threads = max(1, cores // len(groups))
    return [
        Slot(f"{_label(g)}.0", "cuda", _label(g), (("CUDA_VISIBLE_DEVICES", ",".join(g)),), threads)
        for g in groups
    ]


def _label(gpus: Sequence[str]) -> str:
    """``gpu0-1`` for a run of consecutive indices, else ``gpu0+5`` (names log files too)."""
    if all(g.isdigit() for g in gpus):
        first = int(gpus[0])
        if [int(g) for g in gpus] == list(range(first, first + len(gpus))):
            return f"gpu{gpus[0]}-{gpus[-1]}"
    return "gpu" + "+".join(gpus)


def gpus_shortfall(gpus_per_trial: int, gpus: Sequence[str] | None = None) -> str | None:
    """Why no slot of this host can run a trial needing ``gpus_per_trial`` GPUs (None: one can).

    One GPU per trial always fits: without a GPU such trials run on the CPU.
    """
    if gpus_per_trial <= 1:
        return None
    gpus = detect_gpus() if gpus is None else list(gpus)
    if not gpus:
        return f"{gpus_per_trial} GPUs per trial, but this host has no GPU"
    if gpus_per_trial > len(gpus):
        return (f"{gpus_per_trial} GPUs per trial, but this host has {len(gpus)} "
                f"(CUDA_VISIBLE_DEVICES={','.join(gpus)})")
    return None


@dataclass(frozen=True)
class HostSlots:
    """This host's GPUs and the user's slot flags: plans the slots for any trial width, so the
    engine can replan when a study needs wider slots than it runs."""

    gpus: tuple[str, ...]
    slots_per_gpu: int = 1
    cpu_slots: int | None = None

    @classmethod
    def detect(cls, slots_per_gpu: int = 1, cpu_slots: int | None = None) -> HostSlots:
        return cls(tuple(detect_gpus()), slots_per_gpu, cpu_slots)

    @classmethod
    def holding(cls, slots: Sequence[Slot]) -> HostSlots:
        """The host as far as a given slot list shows it (an engine built from fixed slots)."""
        gpus = tuple(dict.fromkeys(g for s in slots for g in s.gpus))
        if not gpus:
            return cls((), cpu_slots=len(slots) or None)
        return cls(gpus, slots_per_gpu=max(1, len(slots) // len(gpus)))

    def plan(self, gpus_per_trial: int = 1) -> list[Slot]:
        return plan_slots(self.slots_per_gpu, self.cpu_slots, self.gpus, gpus_per_trial)

    def problem(self, gpus_per_trial: int) -> str | None:
        """The one-line reason trials of this width cannot run here (None: they can)."""
        shortfall = gpus_shortfall(gpus_per_trial, self.gpus)
        return f"{GPUS_PER_TRIAL_KEY}: {shortfall}" if shortfall else None


ACTIVE_STATES = (TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED)


def study_width(study: Study) -> int:
    """A stored study's ``gpus_per_trial`` (studies stored before the key existed: 1)."""
    return stored_study(study).spec.gpus_per_trial


def wide_studies(store: Storage) -> dict[int, int]:
    """``gpus_per_trial`` of each study wider than one GPU that has QUEUED, RUNNING or PAUSED
    trials (cheap in the usual case: one read of the studies, none of them wide)."""
    wide = [s for s in store.list_studies() if study_width(s) > 1]
    return {s.id: study_width(s) for s in wide if store.list_trials(s.id, states=ACTIVE_STATES)}


def planned_width(store: Storage, host: HostSlots) -> int:
    """The slot width the engine plans: the widest study with work left that fits the host."""
    return fitting_width(wide_studies(store), host)


def fitting_width(widths: dict[int, int], host: HostSlots) -> int:
    """The widest of ``widths`` (study id -> gpus_per_trial) the host can run; 1 if none."""
    return max([1, *(w for w in widths.values() if host.problem(w) is None)])
