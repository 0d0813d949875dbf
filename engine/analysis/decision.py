"""Decisions: is a candidate better than the baseline by more than trial variance?

Playbook, "Making decisions": adopt a change only with strong evidence that it improves on
the baseline by more than the seed-to-seed (trial) variance, and weigh the gain against the
complexity it adds. :func:`compare` takes each side's metric over seed reruns and states
the test (Welch's t-test, two-sided, plus a bootstrap 95% interval for the difference of
means); :func:`complexity_note` says what the candidate changes or adds.

Verdict rules:

* ``adopt`` — the candidate is better by more than ``min_effect``, ``p < alpha`` and the
  bootstrap interval of the improvement excludes 0;
* ``reject`` — the candidate is worse with ``p < alpha``; or it is not better at all after
  :data:`ENOUGH_SEEDS` seeds each; or (with ``min_effect > 0``) the whole interval of the
  improvement lies below ``min_effect``;
* ``inconclusive`` — anything else (within seed noise), including fewer than 2 seeds a side,
  and whenever one side's seeds all gave exactly the same value: the workload ignores its
  seed (a script with a hard-coded seed), the spread of 0 is no trial variance, and a test
  on it would call any difference certain. ``seed_ignored`` names the side(s); no test is run.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from engine.analysis.frames import direction
from engine.kinds import Verdict
from engine.space import format_value
from engine.trial_checks import IdenticalReruns, identical, ignored_seed_message

ENOUGH_SEEDS = 5  # "not better at all after enough seeds" -> reject
N_BOOT = 10_000
TEST_NAME = "Welch's t-test (two-sided) with a bootstrap 95% interval for the difference of means"


@dataclass(frozen=True)
class Comparison:
    """Candidate vs baseline over seed reruns, and the verdict.

    Attributes:
        mode: ``"min"`` or ``"max"``.
        n_candidate, n_baseline, mean_*, std_* (sample std, ddof=1; None for n < 2).
        difference: mean_candidate - mean_baseline (metric units).
        improvement: the difference signed so positive means the candidate is better.
        t_statistic, p_value: Welch's t-test (None when it cannot be computed).
        ci_low, ci_high: bootstrap 95% interval of the difference (candidate - baseline).
        effect_in_seed_std: improvement / pooled seed std (None when the spread is 0).
        verdict: ``"adopt" | "reject" | "inconclusive"``; ``reason`` one sentence.
        test, alpha, min_effect: what the verdict rests on.
        seed_ignored: the sides (``"candidate"``, ``"baseline"``) whose seeds all gave the
            same value; when set, the verdict is inconclusive and no test was run.
    """

    mode: str
    n_candidate: int
    n_baseline: int
    mean_candidate: float | None
    mean_baseline: float | None
    std_candidate: float | None
    std_baseline: float | None
    difference: float | None
    improvement: float | None
    t_statistic: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    effect_in_seed_std: float | None
    verdict: Verdict
    reason: str
    test: str
    alpha: float
    min_effect: float
    seed_ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for the decision log's ``stats``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def compare(
    candidate_values: Sequence[float], baseline_values: Sequence[float], mode: str,
    alpha: float = 0.05, min_effect: float = 0.0, n_boot: int = N_BOOT, seed: int = 0,
    workload: Any = None, metric: str = "", seeded: Collection[str] = (),
) -> Comparison:
    """Compare a candidate's metric over seeds with the baseline's and decide.

    Args:
        candidate_values, baseline_values: the metric of each seed rerun (NaN dropped).
        mode: ``"min"`` or ``"max"``: which way is better.
        alpha: significance level of the test.
        min_effect: the smallest improvement (metric units) worth the change's complexity.
        n_boot, seed: bootstrap resamples and their random seed (deterministic by default).
        workload, metric: the study's, for the advice when its seeds change nothing (how to
            pass the seed differs between a command and a Python workload).
        seeded: sides (``"candidate"``, ``"baseline"``) known to have used their seeds (their
            curves differ), whose identical values are then a coarse metric's coincidence.
    """
    sign = direction(mode)
    c = _finite(candidate_values)
    b = _finite(baseline_values)
    if len(c) < 2 or len(b) < 2:
        return _too_few(c, b, mode, alpha, min_effect)
    same = [IdenticalReruns(side, len(v), float(v[0]))
            for side, v in (("candidate", c), ("baseline", b)) if identical(v.tolist()) and side not in seeded]
    if same:
        return _seed_ignored(c, b, mode, alpha, min_effect, same, workload, metric)
    mc, mb, sc, sb = float(c.mean()), float(b.mean()), float(c.std(ddof=1)), float(b.std(ddof=1))
    diff = mc - mb
    improvement = -sign * diff
    t, p = _welch(c, b)
    lo, hi = _bootstrap_ci(c, b, n_boot, seed)
    pooled = math.sqrt((sc**2 + sb**2) / 2)
    effect = improvement / pooled if pooled > 0 else None
    # The interval of the improvement (candidate better > 0), whatever the mode.
    imp_lo, imp_hi = sorted((-sign * lo, -sign * hi))
    verdict, reason = _verdict(improvement, p, imp_lo, imp_hi, len(c), len(b), alpha,
                               min_effect, pooled)
    return Comparison(mode, len(c), len(b), mc, mb, sc, sb, diff, improvement, t, p, lo, hi,
                      effect, verdict, reason, TEST_NAME, alpha, min_effect)


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    return a[np.isfinite(a)]


def _too_few(
    c: np.ndarray, b: np.ndarray, mode: str, alpha: float, min_effect: float
) -> Comparison:
    mc = float(c.mean()) if len(c) else None
    mb = float(b.mean()) if len(b) else None
    diff = mc - mb if mc is not None and mb is not None else None
    improvement = -direction(mode) * diff if diff is not None else None
    reason = (f"Only {len(c)} candidate and {len(b)} baseline seed(s): at least 2 each are "
              f"needed to measure trial variance; rerun both with more seeds.")
    return Comparison(
        mode, len(c), len(b), mc, mb, float(c.std(ddof=1)) if len(c) > 1 else None,
        float(b.std(ddof=1)) if len(b) > 1 else None, diff, improvement, None, None, None, None,
        None, Verdict.INCONCLUSIVE, reason, TEST_NAME, alpha, min_effect)


def _seed_ignored(
    c: np.ndarray, b: np.ndarray, mode: str, alpha: float, min_effect: float,
    same: list[IdenticalReruns], workload: Any, metric: str,
) -> Comparison:
    """Inconclusive, with no test: a spread of exactly 0 is a seed that was never used."""
    def mean_std(v: np.ndarray) -> tuple[float, float]:  # exact for identical values (no 1e-17)
        return (float(v[0]), 0.0) if identical(v.tolist()) else (float(v.mean()), float(v.std(ddof=1)))

    (mc, sc), (mb, sb) = mean_std(c), mean_std(b)
    diff = mc - mb
    reason = ignored_seed_message(same, workload, metric, lead="Refused: ")
    return Comparison(
        mode, len(c), len(b), mc, mb, sc, sb, diff,
        -direction(mode) * diff, None, None, None, None, None, Verdict.INCONCLUSIVE, reason, TEST_NAME,
        alpha, min_effect, tuple(s.label for s in same))


def _welch(c: np.ndarray, b: np.ndarray) -> tuple[float | None, float]:
    """Welch's t; with zero spread on both sides (seeds that were used, on a coarse metric)
    the difference is exact (p 0 or 1)."""
    if c.std() == 0 and b.std() == 0:
        return None, (1.0 if c.mean() == b.mean() else 0.0)
    res = stats.ttest_ind(c, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def _bootstrap_ci(c: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of mean(c) - mean(b), resampling each side with replacement."""
    rng = np.random.default_rng(seed)
    mc = c[rng.integers(0, len(c), size=(n_boot, len(c)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    lo, hi = np.quantile(mc - mb, [0.025, 0.975])
    return float(lo), float(hi)


def _verdict(
    improvement: float, p: float, imp_lo: float, imp_hi: float, n_c: int, n_b: int,
    alpha: float, min_effect: float, pooled: float,
) -> tuple[Verdict, str]:
    size = f"{format_value(abs(improvement))} (seed std {pooled:.2g})"  # a spread: two digits
    if improvement > min_effect and p < alpha and imp_lo > 0:
        return Verdict.ADOPT, (f"The candidate is better by {size}, p={p:.3g} < {alpha} and the 95% "
                         f"interval of the gain excludes 0: strong evidence of an improvement.")
    if improvement < 0 and p < alpha:
        return Verdict.REJECT, f"The candidate is worse by {size}, p={p:.3g} < {alpha}."
    if improvement <= 0 and min(n_c, n_b) >= ENOUGH_SEEDS:
        return Verdict.REJECT, (f"After {min(n_c, n_b)} seeds each the candidate is not better "
                          f"(difference {size}): keep the baseline.")
    if min_effect > 0 and imp_hi < min_effect:
        return Verdict.REJECT, (f"Any gain is below the minimum effect {format_value(min_effect)} worth "
                          f"the added complexity (95% interval up to {format_value(imp_hi)}).")
    return Verdict.INCONCLUSIVE, (f"The difference {size} is within seed noise (p={p:.3g}); "
                            f"rerun both with more seeds before deciding.")


def complexity_note(candidate_params: Mapping[str, Any], baseline_config: Mapping[str, Any]) -> str:
    """Which hyperparameters the candidate changes or adds relative to the baseline config.

    The playbook weighs a gain against the complexity it adds: a new hyperparameter (a
    regulariser, a schedule) is a cost, a changed value usually is not.
    """
    changed = [f"{k} {format_value(baseline_config[k])} -> {format_value(v)}"
               for k, v in candidate_params.items()
               if k in baseline_config and not _same(v, baseline_config[k])]
    added = [f"{k}={format_value(v)}" for k, v in candidate_params.items()
             if k not in baseline_config]
    if not changed and not added:
        return "Same configuration as the baseline: no added complexity."
    parts = []
    if changed:
        parts.append(f"changes {len(changed)} value(s) ({', '.join(changed)})")
    if added:
        parts.append(f"adds {len(added)} hyperparameter(s) ({', '.join(added)})")
    tail = ("weigh the gain against the added complexity" if added
            else "no new hyperparameters, so little added complexity")
    return f"The candidate {' and '.join(parts)}: {tail}."


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b
