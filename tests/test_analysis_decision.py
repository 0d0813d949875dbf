"""Decisions (candidate vs baseline over seeds) and batch-size analysis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.analysis import (
    compare,
    complexity_note,
    curves_frame_from_columns,
    recommend_batch_size,
    scaling_analysis,
    steps_to_target,
)

RNG = np.random.default_rng(11)


def seeds(mean: float, std: float, n: int = 6) -> list[float]:
    z = RNG.normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)  # exactly this mean and std
    return (mean + std * z).tolist()


def test_difference_within_seed_noise_is_inconclusive() -> None:
    c = compare(seeds(0.300, 0.01, 3), seeds(0.303, 0.01, 3), "min")
    assert c.verdict == "inconclusive" and "seed" in c.reason
    assert c.n_candidate == c.n_baseline == 3
    assert c.difference == pytest.approx(-0.003)
    assert c.improvement == pytest.approx(0.003) and c.p_value > 0.05
    assert c.ci_low < 0 < c.ci_high
    assert c.effect_in_seed_std == pytest.approx(0.3)


def test_difference_far_outside_seed_noise_is_adopted() -> None:
    c = compare(seeds(0.25, 0.005), seeds(0.30, 0.005), "min")
    assert c.verdict == "adopt" and c.p_value < 1e-6
    assert c.ci_high < 0  # the candidate's mean is lower: the interval of the difference
    assert c.effect_in_seed_std == pytest.approx(10.0)
    assert "Welch" in c.test
    json.dumps(c.to_dict(), allow_nan=False)


def test_clearly_worse_or_not_better_after_enough_seeds_is_rejected() -> None:
    worse = compare(seeds(0.35, 0.005), seeds(0.30, 0.005), "min")
    assert worse.verdict == "reject" and "worse" in worse.reason
    not_better = compare(seeds(0.301, 0.01, 6), seeds(0.300, 0.01, 6), "min")
    assert not_better.verdict == "reject" and "not better" in not_better.reason


def test_mode_max_prefers_the_higher_metric() -> None:
    assert compare(seeds(0.95, 0.002), seeds(0.90, 0.002), "max").verdict == "adopt"
    assert compare(seeds(0.90, 0.002), seeds(0.95, 0.002), "max").verdict == "reject"


def test_min_effect_and_too_few_seeds() -> None:
    small = compare(seeds(0.299, 0.0002), seeds(0.300, 0.0002), "min", min_effect=0.01)
    assert small.verdict == "reject" and "minimum effect" in small.reason
    one = compare([0.2], [0.3, 0.31], "min")
    assert one.verdict == "inconclusive" and "more seeds" in one.reason
    assert one.p_value is None and one.mean_candidate == 0.2
    same = compare([0.2, 0.2], [0.2, 0.2], "min")  # no spread at all: no test is run
    assert same.verdict == "inconclusive" and same.p_value is None
    assert same.seed_ignored == ("candidate", "baseline")


def test_seed_reruns_that_never_vary_are_never_adopted() -> None:
    """A script with a hard-coded seed: every seed gives the same value, the spread is 0 and
    Welch's test would call any difference certain (it printed "seed std 0, p = 0, ADOPT")."""
    from engine.workloads.command import CommandWorkload

    script = CommandWorkload(("python", "train.py", "--max_iters={max_train_steps}"))
    c = compare([0.25] * 5, [0.30] * 5, "min", workload=script, metric="val_loss")
    assert c.verdict == "inconclusive" and c.seed_ignored == ("candidate", "baseline")
    assert c.p_value is None and c.t_statistic is None and c.ci_low is None
    assert c.mean_candidate == 0.25 and c.std_candidate == 0.0  # what was measured stays shown
    assert c.reason.startswith("Refused: all 5 candidate and all 5 baseline seed reruns gave "
                               "exactly the same val_loss (0.25 and 0.3), so the workload ignores "
                               "its seed")
    assert 'put {seed} in its command (e.g. "--seed={seed}")' in c.reason
    json.dumps(c.to_dict(), allow_nan=False)


def test_one_side_without_spread_is_enough_to_refuse_and_python_workloads_get_trial_seed() -> None:
    c = compare(seeds(0.25, 0.01, 5), [0.30] * 5, "min", workload="mypkg.train:train")
    assert c.verdict == "inconclusive" and c.seed_ignored == ("baseline",)
    assert "all 5 baseline seed reruns gave exactly the same value (0.3)" in c.reason
    assert "trial.seed" in c.reason and "{seed}" not in c.reason
    passed = compare([0.2, 0.2], seeds(0.3, 0.01, 3), "min",
                     workload={"command": ["python", "t.py", "--seed={seed}"]})
    assert "both candidate seed reruns" in passed.reason
    assert "the value its command passes as {seed} (something in it overrides" in passed.reason


def test_complexity_note_names_changed_and_added_hyperparameters() -> None:
    base = {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 128}
    note = complexity_note({"learning_rate": 0.03, "label_smoothing": 0.1, "batch_size": 128}, base)
    assert "learning_rate 0.01 -> 0.03" in note and "label_smoothing=0.1" in note
    assert "batch_size" not in note and "complexity" in note
    assert "no added complexity" in complexity_note({"learning_rate": 0.01}, base)


# --- batch size -------------------------------------------------------------------------------

def test_recommend_the_largest_batch_size_that_still_raises_throughput() -> None:
    rows = [{"batch_size": b, "examples_per_s": t, "peak_mem_bytes": m, "oom": o}
            for b, t, m, o in [(64, 1900, 2e9, False), (32, 1000, 1e9, False),
                               (128, 3500, 4e9, False), (256, 3700, 8e9, False),
                               (512, 3800, 16e9, False), (1024, None, None, True)]]
    rec = recommend_batch_size(rows)
    assert rec.batch_size == 128 and rec.largest_fitting == 512
    assert [p.batch_size for p in rec.probes] == [32, 64, 128, 256, 512, 1024]
    assert rec.probes[-1].oom and rec.probes[-1].examples_per_s is None
    assert rec.probes[1].gain_over_previous == pytest.approx(0.9)
    assert rec.reason == ("Batch size 256 raises throughput by only 6% over 128 (needs > 10%), and no "
                          "larger size up to 512 gains more: use 128.")
    assert recommend_batch_size(pd.DataFrame(rows[:3])).batch_size == 128
    slower = recommend_batch_size([{"batch_size": b, "examples_per_s": t, "oom": False}
                                   for b, t in [(32, 1000), (64, 2000), (128, 1500)]])
    assert slower.batch_size == 64 and slower.reason == "Batch size 128 is 25% slower than 64: use 64."
    nothing = recommend_batch_size([{"batch_size": 8, "examples_per_s": None, "oom": True}])
    assert nothing.batch_size is None


def test_scaling_study_names_diminishing_returns_and_maximal_parallelism() -> None:
    best = {32: 16000, 64: 8000, 128: 4000, 256: 2400, 512: 2000, 1024: 1900}
    rows = []
    for b, s in best.items():  # three re-tuned learning rates per batch size; one never reaches
        rows += [{"trial_id": len(rows) + k, "batch_size": b, "steps_to_target": v}
                 for k, v in enumerate([s * 1.3, s, np.nan])]
    result = scaling_analysis(pd.DataFrame(rows))
    by_size = {r.batch_size: r for r in result.rows}
    assert [r.steps for r in result.rows] == [float(s) for s in best.values()]
    assert by_size[64].perfect_steps == 8000 and by_size[1024].perfect_steps == 500
    assert by_size[64].speedup_per_doubling == pytest.approx(2.0)
    assert by_size[128].n_trials == 3 and by_size[128].n_reached == 2
    assert result.diminishing_returns_at == 512 and result.maximal_parallelism_at == 1024
    assert result.finding is not None and "512" in result.finding.message


def test_steps_to_target_from_curves() -> None:
    curves = curves_frame_from_columns(
        [1, 1, 1, 2, 2, 2], [0, 10, 20, 0, 10, 20], ["val_error"] * 6,
        [0.9, 0.4, 0.2, 0.9, 0.8, 0.6])
    reached = steps_to_target(curves, "val_error", 0.5, "min")
    assert reached.to_dict() == {1: 10}
