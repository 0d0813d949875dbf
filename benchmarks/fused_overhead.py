"""What the engine adds to a fused group: the same K digits-mlp trials trained in-process
with no-op trials (the bare fused loop: no reports kept, no checkpoints, no workspace) and
through a real worker (claim from a SQLite workspace, per-trial reports, best and latest
checkpoints written by the background writer, every trial finished in the workspace).

Both run in this process on the same warm device, alternating, ``--rounds`` times; the
figures are medians. A phase breakdown of the worker's time follows (``--profile`` prints
the top of a cProfile of one worker run instead).

With ``--groups N`` both train N groups of K back to back: a worker records a group's end
(its best checkpoints written, its trials finished) on the writer's thread while it trains
the next, so this is the throughput of a study of several groups.

Run: python benchmarks/fused_overhead.py [--device cuda] [--k 512] [--groups 1] [--steps 300]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from _common import NullTrial
from fused_engine import STUDY

from engine.runner.saver import SaverPool, savers_for
from engine.runner.worker import Worker, configure_threads, warm_up
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import TrialState
from engine.workloads.builtin import BUILTINS
from engine.workloads.fused import train_mlp_fused
from engine.workspace import launch_study


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare(args: argparse.Namespace) -> float:
    """``--groups`` groups of K no-op trials trained back to back; seconds in all."""
    base = {**BUILTINS["digits-mlp"].defaults(), "optimizer": "adam", "width": args.width}
    gen = torch.Generator().manual_seed(0)
    groups = []
    for g in range(args.groups):
        hps = [
            {**base, "learning_rate": float(10 ** (-4 + 2.5 * a)), "weight_decay": float(10 ** (-6 + 3 * b))}
            for a, b in torch.rand(args.k, 2, generator=gen, dtype=torch.float64).tolist()
        ]
        trials = [NullTrial(args.steps, args.every, seed=g * args.k + i, device=args.device) for i in range(args.k)]
        groups.append((hps, trials))
    _sync(args.device)
    start = time.perf_counter()
    for hps, trials in groups:
        train_mlp_fused(hps, trials)
    _sync(args.device)
    return time.perf_counter() - start


def engine(
    args: argparse.Namespace, round_: int, profile: cProfile.Profile | None = None, serial: bool = False,
) -> dict[str, float]:
    """``--groups`` groups claimed and run by one worker, as its serve loop does, until every
    trial is recorded finished; returns the phases in seconds (``finish`` runs on the writer's
    thread, overlapping the next group's training). ``serial`` waits for each group's end
    before the next claim, as workers did before that overlap."""
    ws = Path(tempfile.mkdtemp()) / ".tuneplay"
    store = open_store(ws)
    spec = parse_study(STUDY.format(
        name=f"r{round_}", steps=args.steps, every=args.every, budget=args.k * args.groups, fuse=args.k,
        width=args.width,
    ))
    launch_study(store, spec)
    worker = Worker(store, ws, "bench", args.device, args.device, group_size=args.k)
    worker.savers = worker.writer.pool = args.pool  # one warm pool for every round, as in a worker
    phases: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t
        return run

    fused_of = worker._fused_function
    worker._fused_function = lambda trial: timed("train", fused_of(trial))  # type: ignore[method-assign]
    worker._end_group = timed("hand over", worker._end_group)  # type: ignore[method-assign]
    worker.claim = timed("claim", worker.claim)  # type: ignore[method-assign]
    store.finish_trials = timed("finish", store.finish_trials)  # type: ignore[method-assign]
    _sync(args.device)
    start = time.perf_counter()
    if profile:
        profile.enable()
    while trials := worker.claim():
        worker.run_trials(trials)
        if serial:
            worker.writer.drain()
    waited = time.perf_counter()
    worker.writer.drain()
    if profile:
        profile.disable()
    end = time.perf_counter()
    done = store.list_trials(states=[TrialState.COMPLETED])
    if len(done) != args.k * args.groups:
        raise RuntimeError(f"{args.k * args.groups - len(done)} trials did not complete")
    writer = {f"writer {name}": took for name, took in worker.writer.seconds.items()}
    last = {f"last {name}": took for name, took in worker.writer.last_batch.items()}
    return {**phases, **writer, **last, "wait": end - waited, "total": end - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--groups", type=int, default=1,
                        help="groups of K run back to back (a worker records one group's end "
                             "while it trains the next)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--savers", type=int, default=None,
                        help="checkpoint saver processes (default: what the engine would give)")
    parser.add_argument("--serial", action="store_true",
                        help="also run the worker waiting for each group's end before the next "
                             "(no overlap), alternating with the others")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="with --profile: pstats sort key")
    parser.add_argument("--lines", type=int, default=35, help="with --profile: rows to print")
    args = parser.parse_args()
    configure_threads(args.threads)
    if args.savers is None:
        args.savers = savers_for(args.device, os.cpu_count() or 1)
    warm_up()
    args.pool = SaverPool(args.savers, Path(tempfile.mkdtemp()))
    args.pool.prewarm()
    deadline = time.time() + 120
    while args.savers and not args.pool.ready and time.time() < deadline:
        time.sleep(0.1)  # the savers start once per worker, not per group
    small = argparse.Namespace(**{**vars(args), "k": 2, "steps": 3, "every": 1, "groups": 1})
    bare(small)  # kernels, data on the device
    engine(small, -1)
    print(f"digits-mlp 64-{args.width}-{args.width}-10, {args.groups} group(s) of K={args.k} trials x "
          f"{args.steps} steps, eval every {args.every}, device {args.device}, {args.savers} saver processes:")
    bares, totals, serials = [], [], []
    names = ("claim", "train", "hand over", "wait", "finish")
    for r in range(args.rounds):
        bares.append(bare(args))
        phases = engine(args, r)
        totals.append(phases["total"])
        parts = ", ".join(f"{name} {phases.get(name, 0.0) * 1e3:.0f}" for name in names)
        print(f"  round {r}: bare {bares[-1]:.3f} s   engine {phases['total']:.3f} s ({parts} ms)")
        writer = ", ".join(f"{name.split()[1]} {took * 1e3:.0f}" for name, took in phases.items()
                           if name.startswith("writer "))
        last = ", ".join(f"{name.split()[1]} {took * 1e3:.0f}" for name, took in phases.items()
                         if name.startswith("last ") and name != "last files")
        print(f"           the writer's thread meanwhile: {writer} ms; its last batch "
              f"({phases.get('last files', 0):.0f} files): {last} ms")
        if args.serial:
            serials.append(engine(args, 1000 + r, serial=True)["total"])
            print(f"           engine waiting for each group's end: {serials[-1]:.3f} s")
    b, e = statistics.median(bares), statistics.median(totals)
    steps = args.k * args.groups * args.steps
    print(f"  median bare fused loop: {b:.3f} s  {steps / b:12,.0f} trial-steps/s")
    print(f"  median through a worker: {e:.3f} s  {steps / e:12,.0f} trial-steps/s")
    print(f"  engine / bare throughput: {b / e:.2f} (target >= 0.8)")
    if serials:
        m = statistics.median(serials)
        print(f"  median, waiting for each group's end: {m:.3f} s  {steps / m:12,.0f} trial-steps/s"
              f"  (engine / bare {b / m:.2f})")
    print(f"  checkpoints written by the savers: {args.pool.files_written}")
    if args.profile:
        prof = cProfile.Profile()
        engine(args, 99, prof)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.lines)
        print(out.getvalue())
    args.pool.close(wait=True)


if __name__ == "__main__":
    main()
