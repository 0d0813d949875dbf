"""Training and validation curves of the best trials, and what is wrong with them.

Playbook, "Examining the training curves": look at the curves of the best few trials for
problematic overfitting, high step-to-step variance late in training, a metric still
improving at the end (train longer) or saturated early (train shorter), and a training loss
that rises (most often a bug or a learning rate that is too high).

Every test works on the metric "oriented" so lower is better (mode ``max`` is negated) and on
two robust estimates of one curve:

* **noise** — the per-eval noise from step-to-step differences over the second half of the
  curve: ``1.4826 * MAD(diff) / sqrt(2)`` (a trend only shifts the differences' median);
* **span** — the range of the smoothed curve (a centred moving average over ~5% of evals).

Thresholds (module constants): overfitting when the mean of the last 10% of evals is worse
than the smoothed best by more than ``3 x noise`` and 1% of the span; high variance when the
std of step-to-step differences over the last 25% of evals exceeds 10% of the metric's level
there; still improving when the smoothed best lies in the last 15% of training and a line
fitted to the last 20% of evals falls by more than 3 standard errors and 1% of the
span; saturated early when the smoothed curve is within ``max(3 x smoothed noise, 1% span)``
of its best by 40% of training and neither overfits nor still improves; training loss
rising when its last 10% average is above its smoothed minimum by more than ``3 x noise``
and 5% of its span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.analysis.findings import (
    CLEAN_CURVE,
    HIGH_VARIANCE,
    OVERFITTING,
    SATURATED_EARLY,
    STILL_IMPROVING,
    TRAIN_LOSS_RISING,
    Finding,
    num,
)
from engine.analysis.frames import direction, ranked_results
from engine.kinds import Mode
from engine.space import format_value
from engine.spec import StudySpec

MIN_EVALS = 6  # fewer evals than this: no diagnosis
END_SHARE = 0.10  # "the end of training": the last 10% of evals (at least 3)
LATE_SHARE = 0.25  # "late in training" for the variance check
TREND_SHARE = 0.20  # the window a trend line is fitted to
TREND_SE = 3.0  # the fitted fall must exceed this many standard errors
STILL_IMPROVING_SHARE = 0.15  # best checkpoint in the last 15% of training
SATURATED_BY = 0.40  # best level reached by 40% of training
OVERFIT_NOISE = 3.0  # a rise must exceed this many noise levels
MIN_CHANGE = 0.01  # ...and this share of the curve's span
HIGH_VARIANCE_REL = 0.10  # std(step-to-step diffs) / level, late in training
TRAIN_RISE = 0.05  # share of the training loss span that counts as "clearly rising"
DEFAULT_CURVE_TRIALS = 5


@dataclass(frozen=True)
class CurveSeries:
    """One metric's curve of one trial: parallel ``steps`` and ``values``."""

    metric: str
    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class TrialCurves:
    """Every metric curve of one of the best trials (``rank`` 1 is the best)."""

    trial_id: int
    rank: int
    best_value: float
    best_step: float | None
    max_train_steps: int
    series: tuple[CurveSeries, ...]


@dataclass(frozen=True)
class CurveDiagnostics:
    """The curves of the best trials and the findings about them (per trial)."""

    metric: str
    train_metric: str
    trials: tuple[TrialCurves, ...]
    findings: tuple[Finding, ...]


def curve_diagnostics(
    curves: pd.DataFrame, trials: pd.DataFrame, spec: StudySpec,
    n_trials: int = DEFAULT_CURVE_TRIALS, train_metric: str = "train_loss",
) -> CurveDiagnostics:
    """Diagnose the validation (``spec.metric``) and training curves of the best trials.

    Only the best ``n_trials`` feasible search trials are looked at, so the (possibly huge)
    curves frame is filtered to them first.
    """
    top = ranked_results(trials, spec.mode).iloc[:n_trials]
    ids = top["trial_id"].to_numpy()
    sub = rows_of_trials(curves, ids).sort_values(["trial_id", "step"], kind="stable")
    by_trial = {int(t): g for t, g in sub.groupby("trial_id", sort=False)}
    out, findings = [], []
    for rank, row in enumerate(top.itertuples(index=False), start=1):
        tid = int(row.trial_id)
        group = by_trial.get(tid)
        series = _series(group) if group is not None else ()
        horizon = int(row.max_train_steps)
        out.append(TrialCurves(tid, rank, float(row.best_value),
                               None if math.isnan(row.best_step) else float(row.best_step),
                               horizon, series))
        findings.extend(_diagnose_trial(series, tid, spec, horizon, train_metric))
    return CurveDiagnostics(spec.metric, train_metric, tuple(out), tuple(findings))


def rows_of_trials(curves: pd.DataFrame, trial_ids: np.ndarray) -> pd.DataFrame:
    """The curve rows of a few trials, without scanning millions of rows twice.

    A store returns curves ordered by trial, so a sorted ``trial_id`` column is sliced with
    binary search; otherwise a membership test is used.
    """
    tid = curves["trial_id"].to_numpy()
    if len(tid) and bool((tid[1:] >= tid[:-1]).all()):
        lo = np.searchsorted(tid, trial_ids, side="left")
        hi = np.searchsorted(tid, trial_ids, side="right")
        rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)] or [np.array([], int)])
        return curves.iloc[np.sort(rows)]
    return curves[np.isin(tid, trial_ids)]


def _series(group: pd.DataFrame) -> tuple[CurveSeries, ...]:
    metric = group["metric"].astype(str).to_numpy()
    steps, values = group["step"].to_numpy(), group["value"].to_numpy(float)
    return tuple(
        CurveSeries(name, tuple(steps[metric == name].tolist()),
                    tuple(values[metric == name].tolist()))
        for name in dict.fromkeys(metric.tolist())
    )


def _diagnose_trial(
    series: tuple[CurveSeries, ...], trial_id: int, spec: StudySpec, horizon: int, train: str
) -> list[Finding]:
    found: list[Finding] = []
    named = {s.metric: s for s in series}
    if spec.metric in named:
        s = named[spec.metric]
        found += diagnose_validation_curve(
            np.asarray(s.steps, float), np.asarray(s.values, float), spec.mode, trial_id,
            spec.metric, horizon)
    if train in named and train != spec.metric:
        s = named[train]
        found += diagnose_training_curve(
            np.asarray(s.steps, float), np.asarray(s.values, float), trial_id, train)
    if series and not any(f.severity == "warn" for f in found):
        found.append(Finding(CLEAN_CURVE, "ok", f"trial #{trial_id}: its curves look healthy "
                             "(no overfitting, noise or rising training loss).",
                             f"trial #{trial_id}", (trial_id,), {"metric": spec.metric}))
    return found


@dataclass(frozen=True)
class _Curve:
    """Robust summaries of one oriented curve (lower is better)."""

    t: np.ndarray
    y: np.ndarray
    smooth: np.ndarray
    noise: float
    span: float
    i_best: int
    n_end: int
    end_level: float


def _summarise(steps: np.ndarray, y: np.ndarray) -> _Curve:
    n = len(y)
    w = max(3, n // 20) | 1
    kernel = np.ones(w)
    smooth = np.convolve(y, kernel, "same") / np.convolve(np.ones(n), kernel, "same")
    d = np.diff(y[n // 2:] if n >= 8 else y)
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    span = float(np.ptp(smooth)) or float(np.ptp(y)) or 1e-12
    n_end = max(3, math.ceil(END_SHARE * n))
    return _Curve(steps, y, smooth, noise, span, int(np.argmin(smooth)), n_end,
                  float(np.mean(y[-n_end:])))


def diagnose_validation_curve(
    steps: np.ndarray, values: np.ndarray, mode: str, trial_id: int, metric: str,
    max_train_steps: int | None = None,
) -> list[Finding]:
    """Overfitting, late variance, still improving and saturated early for one curve.

    Args:
        steps, values: the curve, sorted by step (NaN values are dropped).
        mode: ``"min"`` or ``"max"`` for the metric.
        max_train_steps: the trial's training horizon (default: the last step).
    """
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(values) < MIN_EVALS:
        return []
    sign = direction(mode)
    c = _summarise(steps, sign * values)
    horizon = float(max(steps[-1], (max_train_steps or 0) - 1, 1))
    subject, ids = f"trial #{trial_id}", (trial_id,)
    found = []
    overfit = _overfitting(c, sign, metric, mode, subject, ids, horizon)
    improving = _still_improving(c, sign, metric, subject, ids, horizon)
    found += [f for f in (overfit, improving, _high_variance(c, sign, metric, subject, ids)) if f]
    if overfit is None and improving is None:
        found += [f for f in (_saturated_early(c, sign, metric, subject, ids, horizon),) if f]
    return found


def _overfitting(c: _Curve, sign: float, metric: str, mode: str, subject: str,
                 ids: tuple[int, ...], horizon: float) -> Finding | None:
    best = float(c.smooth[c.i_best])
    rise = c.end_level - best
    threshold = max(OVERFIT_NOISE * c.noise, MIN_CHANGE * c.span)
    if c.i_best >= len(c.y) - c.n_end or rise <= threshold:
        return None
    best_step, end_step = int(c.t[c.i_best]), int(c.t[-1])
    turn = "up" if mode == Mode.MIN else "down"
    message = (f"{subject}: {metric} turns {turn} after its best ({format_value(sign * best)} "
               f"at step {best_step}) and ends at {format_value(sign * c.end_level)}, more than "
               f"its noise allows: problematic overfitting; add regularization (weight decay, "
               f"dropout, augmentation) rather than relying on early stopping.")
    return Finding(OVERFITTING, "warn", message, subject, ids, {
        "metric": metric, "best_step": best_step, "best_value": num(sign * best),
        "end_step": end_step, "end_value": num(sign * c.end_level), "rise": num(rise),
        "noise": num(c.noise), "threshold": num(threshold),
        "best_fraction": num(best_step / horizon, 4)})


def _high_variance(c: _Curve, sign: float, metric: str, subject: str,
                   ids: tuple[int, ...]) -> Finding | None:
    n_late = max(4, math.ceil(LATE_SHARE * len(c.y)))
    late = c.y[-n_late:]
    jump = float(np.std(np.diff(late)))
    level = max(abs(float(np.median(late))), 0.05 * c.span, 1e-12)
    rel = jump / level
    if rel <= HIGH_VARIANCE_REL:
        return None
    start = int(c.t[-n_late])
    message = (f"{subject}: {metric} jumps by about {rel:.0%} of its level from one eval to the "
               f"next after step {start}: noisy curves make trials hard to compare; consider a "
               f"larger batch size, learning-rate decay or Polyak averaging.")
    return Finding(HIGH_VARIANCE, "warn", message, subject, ids, {
        "metric": metric, "from_step": start, "to_step": int(c.t[-1]),
        "std_of_differences": num(jump), "level": num(sign * float(np.median(late))),
        "relative": num(rel, 4), "threshold": HIGH_VARIANCE_REL,
        "min_value": num(sign * float(late.min())), "max_value": num(sign * float(late.max()))})


def _still_improving(c: _Curve, sign: float, metric: str, subject: str,
                     ids: tuple[int, ...], horizon: float) -> Finding | None:
    best_step = float(c.t[c.i_best])
    if best_step < (1.0 - STILL_IMPROVING_SHARE) * horizon:
        return None
    k = max(4, math.ceil(TREND_SHARE * len(c.y)))
    x, y = c.t[-k:], c.y[-k:]
    xc = x - x.mean()
    sxx = float(np.dot(xc, xc)) or 1e-12
    slope = float(np.dot(xc, y - y.mean())) / sxx
    width = float(x[-1] - x[0])
    drop, se_drop = -slope * width, c.noise / math.sqrt(sxx) * width
    threshold = max(TREND_SE * se_drop, MIN_CHANGE * c.span)
    if drop <= threshold:
        return None
    message = (f"{subject}: {metric} is still improving at step {int(c.t[-1])} (it moved by "
               f"{format_value(drop)} over the last {TREND_SHARE:.0%} of training): consider a "
               f"longer max_train_steps in the next round.")
    return Finding(STILL_IMPROVING, "warn", message, subject, ids, {
        "metric": metric, "best_step": int(best_step), "best_value": num(sign * c.smooth[c.i_best]),
        "window_start_step": int(x[0]), "window_end_step": int(x[-1]),
        "start_value": num(sign * (y.mean() - slope * (x.mean() - x[0]))),
        "end_value": num(sign * (y.mean() + slope * (x[-1] - x.mean()))),
        "improvement": num(drop), "threshold": num(threshold),
        "best_fraction": num(best_step / horizon, 4)})


def _saturated_early(c: _Curve, sign: float, metric: str, subject: str,
                     ids: tuple[int, ...], horizon: float) -> Finding | None:
    best = float(c.smooth[c.i_best])
    w = max(3, len(c.y) // 20) | 1
    tol = max(OVERFIT_NOISE * c.noise / math.sqrt(w), MIN_CHANGE * c.span)
    i_sat = int(np.argmax(c.smooth <= best + tol))
    step = float(c.t[i_sat])
    if step > SATURATED_BY * horizon:
        return None
    message = (f"{subject}: {metric} was within {format_value(tol)} of its best by step "
               f"{int(step)} ({step / horizon:.0%} of training) and flat since: on its own, this "
               f"trial would likely do as well with a shorter max_train_steps.")
    return Finding(SATURATED_EARLY, "info", message, subject, ids, {
        "metric": metric, "saturated_step": int(step), "saturated_fraction": num(step / horizon, 4),
        "value_at_saturation": num(sign * float(c.smooth[i_sat])), "best_value": num(sign * best),
        "tolerance": num(tol), "end_value": num(sign * c.end_level)})


def diagnose_training_curve(
    steps: np.ndarray, values: np.ndarray, trial_id: int, metric: str = "train_loss"
) -> list[Finding]:
    """Flag a training loss that ends clearly above its minimum (a likely bug)."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(values) < MIN_EVALS:
        return []
    c = _summarise(steps, values)
    low = float(c.smooth[c.i_best])
    rise = c.end_level - low
    threshold = max(OVERFIT_NOISE * c.noise, TRAIN_RISE * c.span)
    if c.i_best >= len(values) - c.n_end or rise <= threshold:
        return []
    subject = f"trial #{trial_id}"
    message = (f"{subject}: {metric} rises from its minimum {format_value(low)} at step "
               f"{int(c.t[c.i_best])} to {format_value(c.end_level)} at the end; training loss "
               f"should not go up: likely a bug, or a learning rate too high for this schedule.")
    return [Finding(TRAIN_LOSS_RISING, "warn", message, subject, (trial_id,), {
        "metric": metric, "min_step": int(c.t[c.i_best]), "min_value": num(low),
        "end_step": int(c.t[-1]), "end_value": num(c.end_level), "rise": num(rise),
        "noise": num(c.noise), "threshold": num(threshold)})]
