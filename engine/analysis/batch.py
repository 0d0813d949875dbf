"""Batch size: pick it for training speed, and read a batch-size scaling study.

Playbook, "Choosing the batch size": batch size governs training speed, not validation
performance (given re-tuned hyperparameters). A throughput probe measures examples/s and
memory at powers of two until OOM; :func:`recommend_batch_size` picks the largest batch size
whose throughput still rises by more than 10% over the previous (smaller) one, walking up
from the smallest and stopping at the first that does not. A scaling study (Shallue et al.,
2018) measures steps to reach a target metric per batch size, each with its own re-tuned
learning rate; :func:`scaling_analysis` compares them with perfect scaling (doubling the batch
halves the steps) and names where returns diminish (speed-up per doubling below 1.5x) and
where maximal parallelism starts (below 1.1x).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.findings import BATCH_SCALING, Finding, opt_float
from engine.analysis.frames import direction

MEANINGFUL_GAIN = 0.10  # throughput must rise by more than 10% to justify a larger batch
DIMINISHING = 1.5  # speed-up per doubling below this: diminishing returns
MAXIMAL_PARALLELISM = 1.1  # speed-up per doubling below this: maximal data parallelism


@dataclass(frozen=True)
class BatchProbe:
    """One probed batch size: throughput, memory, OOM, and gain over the previous fitting one."""

    batch_size: int
    examples_per_s: float | None
    peak_mem_bytes: float | None
    oom: bool
    gain_over_previous: float | None


@dataclass(frozen=True)
class BatchRecommendation:
    """The recommended batch size (None if nothing fit), the largest that fit, and why."""

    batch_size: int | None
    largest_fitting: int | None
    probes: tuple[BatchProbe, ...]
    reason: str


def recommend_batch_size(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> BatchRecommendation:
    """The largest batch size whose throughput beats every smaller size's by more than 10%.

    Args:
        rows: probe results with ``batch_size``, ``examples_per_s``, ``peak_mem_bytes`` and
            ``oom`` (a DataFrame or a sequence of mappings).
    """
    df = pd.DataFrame(rows).sort_values("batch_size", kind="stable").reset_index(drop=True)
    oom = df["oom"].fillna(False).astype(bool) if "oom" in df else pd.Series(False, index=df.index)
    thr = pd.to_numeric(df["examples_per_s"], errors="coerce")
    fits = (~oom) & thr.gt(0)
    gains = (thr[fits] / thr[fits].shift(1) - 1.0).reindex(df.index)
    mem = df["peak_mem_bytes"] if "peak_mem_bytes" in df else pd.Series(np.nan, index=df.index)
    probes = tuple(
        BatchProbe(int(b), opt_float(t) if f else None, opt_float(m), bool(o), opt_float(g))
        for b, t, m, o, f, g in zip(df["batch_size"], thr, mem, oom, fits, gains)
    )
    sizes, rates = df.loc[fits, "batch_size"].to_numpy(), thr[fits].to_numpy(float)
    if not len(sizes):
        return BatchRecommendation(None, None, probes, "No batch size fit in memory: "
                                   "reduce the model or the input size.")
    # the largest size that beats every smaller one by more than MEANINGFUL_GAIN: one slow
    # size between two fast ones (a noisy measurement, a bad tile) does not stop the climb
    pick = 0
    for i in range(1, len(sizes)):
        if rates[i] > (1.0 + MEANINGFUL_GAIN) * rates[:i].max():
            pick = i
    chosen, largest = int(sizes[pick]), int(sizes[-1])
    if pick < len(sizes) - 1:
        nxt = int(sizes[pick + 1])
        gain = rates[pick + 1] / rates[pick] - 1.0
        versus = (f"is {-gain:.0%} slower than {chosen}" if gain < 0
                  else f"raises throughput by only {gain:.0%} over {chosen} (needs > {MEANINGFUL_GAIN:.0%})")
        beyond = f", and no larger size up to {largest} gains more" if nxt != largest else ""
        reason = f"Batch size {nxt} {versus}{beyond}: use {chosen}."
    elif len(sizes) == 1:
        reason = f"Only batch size {chosen} fit: use it."
    else:
        reason = (f"Throughput rises by more than {MEANINGFUL_GAIN:.0%} over every smaller size up to "
                  f"{chosen}, the largest that fits: use {chosen}.")
    return BatchRecommendation(chosen, largest, probes, reason)


def steps_to_target(curves: pd.DataFrame, metric: str, target: float, mode: str) -> pd.Series:
    """Per trial, the first step whose ``metric`` reaches ``target``.

    Trials that never reach it are absent from the result.
    """
    sign = direction(mode)
    sub = curves[curves["metric"] == metric]
    reached = sub[sign * sub["value"].to_numpy(float) <= sign * target]
    return reached.groupby("trial_id")["step"].min()


@dataclass(frozen=True)
class ScalingRow:
    """One batch size of a scaling study: the fewest steps to the target over its trials."""

    batch_size: int
    steps: float | None
    best_trial_id: int | None
    n_trials: int
    n_reached: int
    perfect_steps: float | None
    speedup_per_doubling: float | None
    efficiency: float | None


@dataclass(frozen=True)
class ScalingAnalysis:
    """Steps-to-target vs batch size against perfect scaling, and where it bends."""

    rows: tuple[ScalingRow, ...]
    diminishing_returns_at: int | None
    maximal_parallelism_at: int | None
    finding: Finding | None


def scaling_analysis(
    df: pd.DataFrame, batch_col: str = "batch_size", steps_col: str = "steps_to_target",
) -> ScalingAnalysis:
    """Read a batch-size scaling study (one row per trial; re-tuned learning rates per batch size).

    Args:
        df: trials with a batch size column (``batch_size`` or ``hp.batch_size``) and the steps
            each took to reach the target (NaN if it never did); ``trial_id`` if present.
    """
    if batch_col not in df and f"hp.{batch_col}" in df:
        batch_col = f"hp.{batch_col}"
    frame = df.assign(_steps=pd.to_numeric(df[steps_col], errors="coerce"))
    if "trial_id" not in frame:
        frame = frame.assign(trial_id=np.arange(len(frame)))
    groups = frame.groupby(batch_col, sort=True)
    n_all, n_hit = groups.size(), groups["_steps"].count()
    reached = frame[np.isfinite(frame["_steps"])]
    best = reached.sort_values("_steps", kind="stable").groupby(batch_col).head(1)
    best = best.set_index(batch_col)
    sizes = n_all.index.to_numpy()
    steps = best["_steps"].reindex(sizes).to_numpy(float)
    ok = np.isfinite(steps)
    perfect = np.full(len(sizes), np.nan)
    speed = np.full(len(sizes), np.nan)
    if ok.any():
        b0, s0 = float(sizes[ok][0]), float(steps[ok][0])
        perfect[ok] = s0 * b0 / sizes[ok].astype(float)
        bs, st = sizes[ok].astype(float), steps[ok]
        speed[np.nonzero(ok)[0][1:]] = (st[:-1] / st[1:]) ** (1.0 / np.log2(bs[1:] / bs[:-1]))
    rows = tuple(
        ScalingRow(int(b), opt_float(s), int(best.at[b, "trial_id"]) if np.isfinite(s) else None,
                   int(n_all[b]), int(n_hit[b]), opt_float(p), opt_float(v),
                   opt_float(p / s) if np.isfinite(s) and np.isfinite(p) else None)
        for b, s, p, v in zip(sizes, steps, perfect, speed)
    )
    dim = _first_below(sizes, speed, DIMINISHING)
    par = _first_below(sizes, speed, MAXIMAL_PARALLELISM)
    return ScalingAnalysis(rows, dim, par, _scaling_finding(rows, dim, par))


def _first_below(sizes: np.ndarray, speed: np.ndarray, threshold: float) -> int | None:
    hit = np.nonzero(np.isfinite(speed) & (speed < threshold))[0]
    return int(sizes[hit[0]]) if len(hit) else None


def _scaling_finding(
    rows: tuple[ScalingRow, ...], dim: int | None, par: int | None
) -> Finding | None:
    measured = [r for r in rows if r.steps is not None]
    if len(measured) < 2:
        return None
    if dim is None:
        message = (f"Steps to the target keep (nearly) halving with each doubling up to batch "
                   f"size {measured[-1].batch_size}: perfect scaling so far; larger batches "
                   f"would still cut training time.")
    else:
        tail = (f"; beyond {par} doubling barely helps (maximal data parallelism)"
                if par is not None else "")
        message = (f"Returns diminish from batch size {dim} (a doubling speeds training up by "
                   f"less than {DIMINISHING}x){tail}: prefer the largest batch size before that "
                   f"which your hardware runs efficiently.")
    ids = tuple(r.best_trial_id for r in measured if r.best_trial_id is not None)
    evidence = {"diminishing_returns_at": dim, "maximal_parallelism_at": par,
                "rows": [{"batch_size": r.batch_size, "steps": r.steps,
                          "perfect_steps": r.perfect_steps,
                          "speedup_per_doubling": r.speedup_per_doubling} for r in rows]}
    return Finding(BATCH_SCALING, "info", message, "batch_size", ids, evidence)

