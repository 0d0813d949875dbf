"""End-to-end: a 32-trial digits-mlp study, one trial at a time vs fused groups of K.

Each trial has its own learning rate and weight decay (log-uniform, fixed sample), Adam,
300 steps, an evaluation every 50 steps; the training functions run in-process with
no-op trials (the trial API, no engine). Prints trial-steps/s for each way and the ratio
to one-at-a-time, and how many trials reach the same best val_error both ways (fused
trials are the same computation up to float rounding).

Run: python benchmarks/fused.py [--device cuda] [--threads 1] [--sizes 8,32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from _common import NullTrial

from engine.runner.worker import configure_threads
from engine.workloads.builtin import BUILTINS
from engine.workloads.digits import train_mlp
from engine.workloads.fused import train_mlp_fused

TRIALS, STEPS, EVAL_EVERY = 32, 300, 50


def study() -> list[dict[str, object]]:
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(TRIALS, 2, generator=gen, dtype=torch.float64)
    base = {**BUILTINS["digits-mlp"].defaults(), "optimizer": "adam"}
    return [
        {
            **base,
            "learning_rate": float(10 ** (-4 + 3 * a)),
            "weight_decay": float(10 ** (-5 + 3 * b)),
        }
        for a, b in u.tolist()
    ]


def run_unfused(hps: list[dict[str, object]], device: str) -> tuple[float, list[NullTrial]]:
    trials = [NullTrial(STEPS, EVAL_EVERY, seed=i, device=device) for i in range(len(hps))]
    start = time.perf_counter()
    for hp, trial in zip(hps, trials):
        train_mlp(hp, trial)
    _sync(device)
    return time.perf_counter() - start, trials


def run_fused(hps: list[dict[str, object]], device: str, k: int) -> tuple[float, list[NullTrial]]:
    trials = [NullTrial(STEPS, EVAL_EVERY, seed=i, device=device) for i in range(len(hps))]
    start = time.perf_counter()
    for first in range(0, len(hps), k):
        train_mlp_fused(hps[first : first + k], trials[first : first + k])
    _sync(device)
    return time.perf_counter() - start, trials


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (engine: 1)")
    parser.add_argument("--sizes", default="8,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args()
    globals()["TRIALS"] = args.trials
    configure_threads(args.threads)
    device, hps = args.device, study()
    run_fused(hps[:2], device, 2)  # warm up: data, kernels
    run_unfused(hps[:1], device)
    print(
        f"digits-mlp study: {TRIALS} trials x {STEPS} steps (Adam, per-trial lr and weight "
        f"decay), device {device}, threads {torch.get_num_threads()}"
    )
    total = TRIALS * STEPS
    seconds, alone = min((run_unfused(hps, device) for _ in range(args.rounds)), key=lambda r: r[0])
    base = total / seconds
    print(f"{'one at a time':>14}: {seconds:6.2f} s  {base:8.0f} trial-steps/s")
    for k in (int(s) for s in args.sizes.split(",")):
        seconds, trials = min(
            (run_fused(hps, device, k) for _ in range(args.rounds)), key=lambda r: r[0]
        )
        rate = total / seconds
        gaps = [abs((a.best or 0.0) - (f.best or 0.0)) for a, f in zip(alone, trials)]
        same = sum(gap <= 1 / 400 + 1e-9 for gap in gaps)
        print(
            f"{'fused K=' + str(k):>14}: {seconds:6.2f} s  {rate:8.0f} trial-steps/s  "
            f"({rate / base:4.1f}x)  best val_error as alone: {same}/{len(gaps)} trials "
            f"(max gap {max(gaps):.4f})"
        )
    print(
        "(a best val_error that differs belongs to a high-learning-rate trial, whose chaotic "
        "training amplifies float rounding)"
    )


if __name__ == "__main__":
    main()
