"""Curve diagnostics: curves built to overfit, be noisy, still improve, saturate early, or
have a rising training loss are labelled so; a clean curve gets no warning."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis import (
    curve_diagnostics,
    curves_frame_from_columns,
    diagnose_training_curve,
    diagnose_validation_curve,
    trials_frame,
)
from engine.spec import StudySpec
from engine.store.base import Trial, TrialState

T = 10_000
STEPS = np.linspace(0, T - 1, 200).round()
X = STEPS / T
RNG = np.random.default_rng(0)


def noise(sigma: float) -> np.ndarray:
    return RNG.normal(0, sigma, len(STEPS))


CURVES = {
    "clean": 0.3 + 2 * np.exp(-8 * X) + noise(0.002),
    "overfit": 0.3 + 2 * np.exp(-10 * X) + 0.4 * X**2 + noise(0.003),
    "noisy": 0.3 + 2 * np.exp(-8 * X) + noise(0.05),
    "improving": 0.3 + 2 * np.exp(-1.5 * X) + noise(0.002),
    "saturated": 0.3 + 2 * np.exp(-40 * X) + noise(0.002),
}


def kinds(curve: np.ndarray, mode: str = "min", severity: str | None = None) -> set[str]:
    found = diagnose_validation_curve(STEPS, curve, mode, 7, "val_loss", T)
    return {f.kind for f in found if severity is None or f.severity == severity}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_each_built_curve_gets_its_label(mode: str) -> None:
    sign = 1.0 if mode == "min" else -1.0  # mode max: the same curves as an accuracy-like metric
    assert kinds(sign * CURVES["clean"], mode, "warn") == set()
    assert "overfitting" in kinds(sign * CURVES["overfit"], mode)
    assert "high_variance" in kinds(sign * CURVES["noisy"], mode)
    assert "overfitting" not in kinds(sign * CURVES["noisy"], mode)
    assert kinds(sign * CURVES["improving"], mode) == {"still_improving"}
    assert kinds(sign * CURVES["saturated"], mode) == {"saturated_early"}


def test_findings_carry_steps_and_values_as_evidence() -> None:
    (over,) = diagnose_validation_curve(STEPS, CURVES["overfit"], "min", 7, "val_loss", T)
    ev = over.evidence
    assert over.subject == "trial #7" and over.trial_ids == (7,) and over.severity == "warn"
    assert 3000 <= ev["best_step"] <= 5000  # the U's bottom is near 40% of training
    assert ev["end_value"] > ev["best_value"] + ev["threshold"]
    assert "regulariz" in over.message

    (sat,) = diagnose_validation_curve(STEPS, CURVES["saturated"], "min", 7, "val_loss", T)
    assert sat.severity == "info" and sat.evidence["saturated_fraction"] < 0.4

    (imp,) = diagnose_validation_curve(STEPS, CURVES["improving"], "min", 7, "val_loss", T)
    assert imp.evidence["end_value"] < imp.evidence["start_value"]
    assert "max_train_steps" in imp.message


def test_rising_training_loss_is_flagged_and_a_falling_one_is_not() -> None:
    rising = 0.2 + 2 * np.exp(-10 * X) + 0.5 * np.maximum(0, X - 0.6) + noise(0.003)
    (f,) = diagnose_training_curve(STEPS, rising, 3)
    assert f.kind == "train_loss_rising" and f.severity == "warn" and "bug" in f.message
    assert f.evidence["end_value"] > f.evidence["min_value"]
    assert diagnose_training_curve(STEPS, CURVES["clean"] - 0.1, 3) == []


def test_too_few_evals_are_not_judged() -> None:
    assert diagnose_validation_curve(STEPS[:4], CURVES["overfit"][:4], "min", 1, "val_loss") == []


def test_curve_diagnostics_reads_only_the_best_trials_from_the_frame() -> None:
    spec = StudySpec(name="c", workload="builtin:digits-mlp", metric="val_loss", mode="min",
                     max_train_steps=T, eval_every=50, budget=10)
    order = ["overfit", "clean", "improving", "saturated", "noisy"]
    trials = [Trial(id=i + 1, study_id=1, number=i, params={}, seed=0,
                    state=TrialState.COMPLETED, attempt=1, point_index=i, kind="search",
                    max_train_steps=T, created_at=0.0, best_step=5000, best_value=0.1 * (i + 1))
              for i in range(len(order))]
    tid, step, metric, value = [], [], [], []
    for i, name in enumerate(order):
        for m, curve in (("val_loss", CURVES[name]), ("train_loss", CURVES["clean"] - 0.1)):
            tid += [i + 1] * len(STEPS)
            step += STEPS.astype(int).tolist()
            metric += [m] * len(STEPS)
            value += curve.tolist()
    curves = curves_frame_from_columns(tid, step, metric, value)
    diag = curve_diagnostics(curves, trials_frame(trials), spec, n_trials=3)
    assert [t.trial_id for t in diag.trials] == [1, 2, 3] and diag.trials[0].rank == 1
    series = {s.metric: s for s in diag.trials[0].series}
    assert series["val_loss"].steps[:2] == (0, 50) and len(series["val_loss"].values) == 200
    by_trial = {}
    for f in diag.findings:
        by_trial.setdefault(f.trial_ids[0], set()).add(f.kind)
    assert by_trial == {1: {"overfitting"}, 2: {"clean_curve"}, 3: {"still_improving"}}
