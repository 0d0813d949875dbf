"""Bayesian search speed: the batch-of-n time of tuneplay's sampler, before and after issue 13.

Before: skopt's ``Optimizer`` told every trial and asked with ``strategy="cl_max"``, which refits
the GP's hyperparameters for every constant-liar point (a copy of that code is kept below as
``old_suggest``). After: ``engine.search.bayes.suggest_batch`` fits once per batch, warm-started
from the hyperparameters the study stored after its previous batch, and fills the batch by
kriging believer with the hyperparameters fixed; the GP sees at most ``GP_CAP`` trials.

The study: 4 dimensions (learning rate and weight decay log-scaled, dropout, label smoothing),
``n`` finished trials at quasi-random points with a noisy objective; trials with a learning rate
above 0.03 diverged (infeasible). "warm" is the steady state of a running study (the stored
hyperparameters come from the fit one batch earlier); "cold" is the first fit with none stored.
"old, 1 BLAS thread" separates the thread limit the new code sets from the restructuring.

Run: python benchmarks/bayes_speed.py [--repeats 3] [--old-repeats 1] [--quick]
Prints medians over repeats (the machine is shared and noisy); no assertions.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.search.bayes import (
    GP_CAP,
    _dimensions,
    _observations,
    _x,
    n_initial_points,
    suggest_batch,
)
from engine.search.quasi_random import halton_points
from engine.space import Param, RangeParam

PARAMS: tuple[Param, ...] = (
    RangeParam("learning_rate", 1e-4, 1e-1, "log"),
    RangeParam("weight_decay", 1e-6, 1e-2, "log"),
    RangeParam("dropout", 0.0, 0.5),
    RangeParam("label_smoothing", 0.0, 0.2),
)
TARGETS = {(256, 8): 1.0, (1000, 512): 10.0}  # seconds, from issue 13
ANY_BATCH_TARGET = 2.0  # any batch up to 64 at n <= 2,000


def old_suggest(
    params: Sequence[Param],
    seed: int,
    budget: int,
    mode: str,
    finished: Sequence[tuple[Mapping[str, Any], float | None]],
    pending: Sequence[Mapping[str, Any]],
    n: int,
) -> list[dict[str, Any]]:
    """bayes.suggest before issue 13 (commit 4ae49cc): skopt Optimizer, cl_max, refit per liar."""
    from skopt import Optimizer

    if n <= 0:
        return []
    opt = Optimizer(
        _dimensions(params), base_estimator="GP", acq_func="EI", acq_optimizer="sampling",
        n_initial_points=n_initial_points(budget), initial_point_generator="halton",
        random_state=seed,
    )
    xs, ys = _observations(params, mode, finished)
    sign_liar = max(ys) if ys else 0.0
    xs += [_x(params, p) for p in pending]
    ys += [sign_liar] * len(pending)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if xs:
            opt.tell(xs, ys)
        points = opt.ask(n_points=n, strategy="cl_max") if n > 1 else [opt.ask()]
    return [{p.name: (v.item() if isinstance(v, np.generic) else v) for p, v in zip(params, x)}
            for x in points]


def study(n: int, seed: int = 0) -> list[tuple[dict[str, Any], float | None]]:
    """``n`` finished trials of the 4-d study (diverged above lr 0.03)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[dict[str, Any], float | None]] = []
    for hp in halton_points(PARAMS, seed, 0, n):
        lr = math.log10(hp["learning_rate"])
        wd = math.log10(hp["weight_decay"])
        value = (0.08 + 0.06 * (lr + 1.8) ** 2 + 0.015 * (wd + 3.8) ** 2
                 + 0.3 * (hp["dropout"] - 0.2) ** 2 + 0.5 * (hp["label_smoothing"] - 0.08) ** 2
                 + rng.normal(0, 0.01))
        out.append((hp, None if hp["learning_rate"] > 0.03 else value))
    return out


def timed(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def new_times(n: int, b: int, repeats: int) -> tuple[float, float, str]:
    """(warm, cold) seconds of one batch of ``b`` at ``n`` finished trials, and the GP note."""
    trials = study(n)
    budget = 10**6
    prev = suggest_batch(PARAMS, 0, budget, "min", trials[: n - b], [], b)  # the stored fit
    warm = timed(lambda: suggest_batch(PARAMS, 0, budget, "min", trials, [], b, theta=prev.theta),
                 repeats)
    cold = timed(lambda: suggest_batch(PARAMS, 0, budget, "min", trials, [], b), repeats)
    return warm, cold, suggest_batch(PARAMS, 0, budget, "min", trials, [], 0).note


def old_time(n: int, b: int, repeats: int, one_thread: bool) -> float:
    from threadpoolctl import threadpool_limits

    trials = study(n)
    if one_thread:
        with threadpool_limits(limits=1, user_api="blas"):
            return timed(lambda: old_suggest(PARAMS, 0, 10**6, "min", trials, [], b), repeats)
    return timed(lambda: old_suggest(PARAMS, 0, 10**6, "min", trials, [], b), repeats)


def _s(seconds: float) -> str:
    return f"{'-':>8}" if math.isnan(seconds) else f"{seconds:>8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timings per cell (median)")
    ap.add_argument("--old-repeats", type=int, default=1, help="timings of the old code")
    ap.add_argument("--quick", action="store_true", help="only the n=256 cases")
    args = ap.parse_args()
    print(f"GP_CAP = {GP_CAP}; medians of {args.repeats} (new) / {args.old_repeats} (old) runs\n")
    print(f"{'n':>5} {'batch':>5} | {'old':>8} {'old 1thr':>8} | {'new warm':>8} {'new cold':>8} "
          f"| speed-up (old/1thr) | target   | what the GP saw")
    cases = [(256, 1), (256, 8)] if args.quick else [
        (256, 1), (256, 8), (256, 64), (1000, 8), (1000, 64), (1000, 512), (2000, 1), (2000, 8),
        (2000, 64),
    ]
    for n, b in cases:
        warm, cold, note = new_times(n, b, args.repeats)
        run_old = n <= 256 and b <= 8
        old = old_time(n, b, args.old_repeats, False) if run_old else float("nan")
        old1 = old_time(n, b, args.old_repeats, True) if run_old else float("nan")
        target = TARGETS.get((n, b), ANY_BATCH_TARGET if b <= 64 else float("nan"))
        ok = "ok" if warm <= target else "MISSED"
        ratio = f"{f'{old / warm:.0f}x / {old1 / warm:.0f}x':>19}" if run_old else f"{'-':>19}"
        print(f"{n:>5} {b:>5} | {_s(old)} {_s(old1)} | {warm:>8.2f} {cold:>8.2f} | {ratio} | "
              f"<= {target:>4.1f} {ok:<6} | {note}", flush=True)
    print("\nold: skopt ask(strategy='cl_max') as before issue 13 (not run where it would take "
          "minutes: one refit per liar); seconds per batch.")


if __name__ == "__main__":
    main()
