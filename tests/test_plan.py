"""The next-round plan on studies with known answers: each topic gets the one right direction,
the findings that pull the other way are named as overruled, and the findings that were wrong
at their source (a one-point narrowing, reruns counted as trials, a tie called a win, a range
with no effect called "well inside") say what the data shows."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from engine.analysis import analyze_study, narrow_range, report_to_dict, trials_frame
from engine.analysis.checkpoints import round_up_steps
from engine.analysis.plan import Budget, Length, RangeAction, next_name
from engine.space import ChoiceParam, RangeParam
from engine.spec import StudySpec, parse_study
from tests.synthetic_study import at, curves, trial

LR = RangeParam("learning_rate", 1e-4, 1e-1, "log")
WD = RangeParam("weight_decay", 1e-6, 1e-2, "log")
LAYERS = RangeParam("num_layers", 2, 8, "int")
ACT = ChoiceParam("activation", ("relu", "tanh"))


def make_spec(nuisance: tuple = (LR, WD), scientific: tuple = (), steps: int = 100,
              budget: int = 16) -> StudySpec:
    return StudySpec(name="demo", workload="builtin:digits-mlp", metric="val_error", mode="min",
                     max_train_steps=steps, eval_every=5, budget=budget, experiment="digits-mlp",
                     nuisance=nuisance, scientific=scientific, source="studies/demo.toml")


def by_name(plan) -> dict:  # type: ignore[no-untyped-def]
    return {r.name: r for r in plan.ranges}


# --- ranges ------------------------------------------------------------------------------------

def test_a_boundary_case_expands_that_side_with_the_new_bounds() -> None:
    """40 poor trials and 6 good ones with learning_rate at its top and num_layers at its bottom."""
    rng = np.random.default_rng(1)
    spec = make_spec(nuisance=(LR, LAYERS), budget=46)
    trials = [trial(i, {"learning_rate": at(LR, rng.uniform()), "num_layers": int(rng.integers(2, 9))},
                    1.0 + rng.uniform()) for i in range(40)]
    trials += [trial(100 + j, {"learning_rate": at(LR, u), "num_layers": 2}, 0.1 + 0.01 * j)
               for j, u in enumerate([0.99, 0.97, 0.95, 0.93, 0.96, 0.5])]
    plan = analyze_study(spec, trials_frame(trials)).next_round
    assert plan is not None
    lr, layers = by_name(plan)["learning_rate"], by_name(plan)["num_layers"]
    assert lr.action == RangeAction.EXPAND and lr.new_low == LR.low
    assert lr.new_high == pytest.approx(0.1 * math.sqrt(1000), rel=1e-4)  # log: x sqrt(high/low)
    assert layers.action == RangeAction.EXPAND and (layers.new_low, layers.new_high) == (1, 8)
    assert "top 10% of its range" in lr.reason
    drafted = tomllib.loads(plan.draft)["nuisance"]
    assert drafted["learning_rate"] == {"low": LR.low, "high": pytest.approx(3.16228), "scale": "log"}
    assert drafted["num_layers"] == {"low": 1, "high": 8, "scale": "int"}


def lr_only_study(wd_effect: float = 0.0, reruns: float | None = None) -> StudySpec | tuple:
    """A full grid: 8 learning rates x 3 weight decays (one per third of its range); the metric
    depends on the learning rate only (plus ``wd_effect`` per third of weight decay)."""
    spec = make_spec(budget=24)
    trials = []
    for i, (u_lr, third) in enumerate((a, b) for a in np.linspace(0.06, 0.94, 8) for b in range(3)):
        value = 0.02 + (u_lr - 0.5) ** 2 + wd_effect * third
        trials.append(trial(i, {"learning_rate": at(LR, u_lr), "weight_decay": at(WD, (third + 0.5) / 3)},
                            round(value, 6)))
    if reruns is not None:  # seed reruns of one configuration, spread ``reruns``
        best = min(trials, key=lambda t: t.best_value or 0)
        trials += [trial(500 + s, best.params, (best.best_value or 0) + d, kind="rerun", seed=s)
                   for s, d in enumerate([-reruns, 0.0, reruns])]
    return spec, trials_frame(trials)


def test_a_range_with_no_visible_effect_is_insensitive_not_well_inside() -> None:
    spec, df = lr_only_study()
    report = analyze_study(spec, df)
    (wd,) = report.findings_of("insensitive")
    assert wd.subject == "weight_decay" and "insensitive over this range" in wd.message
    assert "no need to expand" not in wd.message
    plan = by_name(report.next_round)
    assert plan["weight_decay"].action == RangeAction.INSENSITIVE
    assert (plan["weight_decay"].new_low, plan["weight_decay"].new_high) == (WD.low, WD.high)
    assert plan["learning_rate"].action != RangeAction.INSENSITIVE  # it drives the metric
    assert report.findings_of("well_inside")[0].subject == "learning_rate"


def test_a_small_effect_within_the_seed_noise_is_insensitive_and_beyond_it_is_not() -> None:
    spec, df = lr_only_study(wd_effect=0.004, reruns=0.01)  # seed std 0.01 >> 0.008 effect
    (check,) = [c for c in analyze_study(spec, df).boundaries if c.name == "weight_decay"]
    assert check.insensitive and check.sensitivity is not None
    assert check.sensitivity.seed_std == pytest.approx(0.01)
    assert "twice the seed spread" in check.finding.message
    spec, df = lr_only_study(wd_effect=0.03, reruns=0.001)  # a clear effect, small seed noise
    (check,) = [c for c in analyze_study(spec, df).boundaries if c.name == "weight_decay"]
    assert not check.insensitive and check.finding.kind != "insensitive"


def test_narrowing_is_padded_and_never_a_single_point() -> None:
    low, high = narrow_range(LR, 0.01, 0.01)  # one good value: still a range around it
    assert low < 0.01 < high and LR.to_unit(high) - LR.to_unit(low) == pytest.approx(0.3, abs=0.02)
    assert narrow_range(LR, LR.low, LR.high) is None  # nothing to take away
    assert narrow_range(LAYERS, 5, 5) == (4, 6)
    # a study whose one good trial sits at learning_rate 0.1487: no "0.1487..0.1487" advice
    spec = make_spec(nuisance=(RangeParam("learning_rate", 1e-3, 1.0, "log"),))
    trials = [trial(i, {"learning_rate": 10 ** -(1 + i / 5)}, 0.5 + 0.01 * i) for i in range(12)]
    trials.append(trial(50, {"learning_rate": 0.1487}, 0.05))
    report = analyze_study(spec, trials_frame(trials))
    (sparse,) = report.findings_of("sparse_sampling")
    assert "0.1487..0.1487" not in sparse.message and sparse.message.endswith("add trials.")
    assert report.next_round is not None
    assert by_name(report.next_round)["learning_rate"].action != RangeAction.NARROW


def test_a_compact_good_region_narrows_a_nuisance_range_around_it() -> None:
    spec = make_spec(nuisance=(LR,), budget=20)
    trials = [trial(i, {"learning_rate": at(LR, u)}, 0.8 + 0.01 * i)
              for i, u in enumerate(np.linspace(0.02, 0.98, 14))]
    trials += [trial(100 + j, {"learning_rate": at(LR, 0.5)}, 0.1 + 0.001 * j) for j in range(6)]
    report = analyze_study(spec, trials_frame(trials))
    lr = by_name(report.next_round)["learning_rate"]
    assert lr.action == RangeAction.NARROW
    assert LR.low < lr.new_low < at(LR, 0.5) < lr.new_high < LR.high


# --- training length -----------------------------------------------------------------------------

def top_curves_study(shapes: list[str], best_frac: float, steps: int = 100,
                     n_rest: int = 11) -> tuple[StudySpec, object, object]:
    """5 best trials with curves of the given shapes, and ``n_rest`` poorer ones; every best
    checkpoint at ``best_frac`` of training."""
    spec = make_spec(nuisance=(LR,), steps=steps)
    at_step = int(best_frac * (steps - 1))
    trials = [trial(i, {"learning_rate": at(LR, 0.3 + 0.05 * i)}, 0.05 + 0.01 * i, best_step=at_step,
                    steps=steps) for i in range(len(shapes))]
    trials += [trial(10 + i, {"learning_rate": at(LR, u)}, 0.5 + 0.01 * i, best_step=at_step, steps=steps)
               for i, u in enumerate(np.linspace(0.02, 0.98, n_rest))]
    ends = {i: 0.05 + 0.01 * i for i in range(len(shapes))}
    return spec, trials_frame(trials), curves(dict(enumerate(shapes)), steps, ends)


def test_late_best_checkpoints_mean_longer_and_outrank_one_flat_trial() -> None:
    """The issue's report: 'most best checkpoints land late: train longer' beside 'trial 4 is
    flat: shorter would do'. The plan says longer; trial 4's finding is named as overruled."""
    spec, df, cv = top_curves_study(["improving", "improving", "improving", "improving", "saturated"],
                                    best_frac=0.97)
    report = analyze_study(spec, df, cv)
    assert report.findings_of("best_checkpoint_late") and report.findings_of("saturated_early")
    t = report.next_round.training
    assert t.action == Length.LONGER and t.proposed == round_up_steps(1.5 * 100) == 150
    assert [(b.kind, b.subject) for b in t.overruled] == [("saturated_early", "trial #4")]
    assert "outrank" in t.overruled[0].note
    assert tomllib.loads(report.next_round.draft)["study"]["max_train_steps"] == 150


def test_improving_curves_mean_longer_when_the_checkpoints_say_nothing() -> None:
    spec, df, cv = top_curves_study(["improving"] * 4 + ["clean"], best_frac=0.5)
    report = analyze_study(spec, df, cv)
    assert report.findings_of("best_checkpoint_ok")
    t = report.next_round.training
    assert t.action == Length.LONGER and t.proposed == 150
    assert "still improving" in t.reason


def test_saturated_curves_mean_shorter() -> None:
    spec, df, cv = top_curves_study(["saturated"] * 5, best_frac=0.5, steps=1000)
    report = analyze_study(spec, df, cv)
    t = report.next_round.training
    last = max(f.evidence["saturated_step"] for f in report.findings_of("saturated_early"))
    assert t.action == Length.SHORTER and t.current == 1000
    assert t.proposed == round_up_steps(1.5 * last) < 1000
    assert not t.overruled


def test_one_flat_trial_among_clean_ones_keeps_the_length() -> None:
    spec, df, cv = top_curves_study(["clean", "clean", "clean", "clean", "saturated"], best_frac=0.5)
    t = analyze_study(spec, df, cv).next_round.training
    assert t.action == Length.KEEP and t.proposed == t.current
    assert [b.kind for b in t.overruled] == ["saturated_early"]


# --- budget --------------------------------------------------------------------------------------

def test_a_sparse_study_asks_for_more_trials_even_when_the_best_has_saturated() -> None:
    """The issue's report: 'only 2 trials reach the good region: add trials' beside 'the search
    has saturated: more trials would add little'. The plan says more, and says why."""
    spec = make_spec(nuisance=(LR,), scientific=(ACT,), budget=16)
    trials = [trial(i, {"learning_rate": at(LR, u), "activation": "relu"}, 1.0 + 0.01 * i)
              for i, u in enumerate(np.linspace(0.02, 0.98, 14))]
    trials += [trial(20 + j, {"learning_rate": at(LR, 0.4 + 0.2 * j), "activation": "tanh"}, 0.1)
               for j in range(2)]
    report = analyze_study(spec, trials_frame(trials))
    assert report.best_vs_trials is not None and report.best_vs_trials.finding.evidence["saturated"]
    b = report.next_round.budget
    assert b.action == Budget.MORE and b.proposed == 32  # doubled, a multiple of the 2 values
    assert [x.kind for x in b.overruled] == ["budget_sensitivity"]
    assert tomllib.loads(report.next_round.draft)["study"]["budget"] == 32


def test_a_dense_saturated_study_has_enough_trials() -> None:
    spec = make_spec(nuisance=(LR,), budget=30)
    trials = [trial(i, {"learning_rate": at(LR, u)}, 0.1 if i % 3 else 0.2 + 0.01 * i)
              for i, u in enumerate(np.linspace(0.3, 0.7, 30))]  # a coarse metric: 20 at its best
    b = analyze_study(spec, trials_frame(trials)).next_round.budget
    assert b.action == Budget.ENOUGH and b.proposed == b.current == 30


# --- isolation -----------------------------------------------------------------------------------

def test_isolation_counts_search_trials_only_and_calls_a_tie_a_tie() -> None:
    """relu and tanh reach the same best value; relu's best point was rerun with 10 seeds."""
    spec = make_spec(nuisance=(LR,), scientific=(ACT,))
    trials = [trial(i * 2 + k, {"learning_rate": at(LR, u), "activation": act},
                    0.0125 if i == 3 else 0.05 + 0.01 * i)
              for i, u in enumerate(np.linspace(0.1, 0.9, 8)) for k, act in enumerate(["relu", "tanh"])]
    trials += [trial(100 + s, dict(trials[6].params), 0.0125 + 0.001 * (s % 3), kind="rerun", seed=s)
               for s in range(10)]
    report = analyze_study(spec, trials_frame(trials))
    (plot,) = report.isolation
    rows = {r.value: r for r in plot.rows}
    assert (rows["relu"].n_trials, rows["relu"].n_feasible, rows["relu"].n_reruns) == (8, 8, 10)
    assert (rows["tanh"].n_trials, rows["tanh"].n_feasible, rows["tanh"].n_reruns) == (8, 8, 0)
    assert plot.best_row is None and plot.tied == (0, 1)
    message = plot.finding.message
    assert "relu and tanh tie at the best val_error 0.0125" in message
    assert "ahead of" not in message and "gives the best" not in message


def test_a_real_gap_is_still_reported_as_one_value_ahead() -> None:
    spec = make_spec(nuisance=(LR,), scientific=(ACT,))
    trials = [trial(i * 2 + k, {"learning_rate": at(LR, u), "activation": act}, 0.05 + 0.01 * i + 0.02 * k)
              for i, u in enumerate(np.linspace(0.1, 0.9, 8)) for k, act in enumerate(["relu", "tanh"])]
    (plot,) = analyze_study(spec, trials_frame(trials)).isolation
    assert plot.rows[plot.best_row].value == "relu" and not plot.tied
    assert "relu gives the best val_error 0.05, 0.02 ahead of tanh" in plot.finding.message


# --- the plan as a whole -------------------------------------------------------------------------

def test_the_plan_is_first_in_the_json_and_its_draft_validates_with_a_comment_per_change() -> None:
    spec, df, cv = top_curves_study(["improving"] * 5, best_frac=0.97)
    report = analyze_study(spec, df, cv, taken_names=["demo-r2"])
    data = report_to_dict(report)
    assert list(data)[:5] == ["study", "metric", "mode", "protocol", "next_round"]
    plan = data["next_round"]
    assert plan["name"] == "demo-r3" and plan["path"] == "studies/demo-r3.toml"
    assert plan["training"]["action"] == "longer" and plan["budget"]["action"] in ("more", "enough")
    again = parse_study(report.next_round.draft, "studies/demo-r3.toml")
    assert again.name == "demo-r3" and again.max_train_steps == 150
    assert again.experiment == spec.experiment and again.workload == spec.workload
    for line in report.next_round.draft.splitlines():
        if line.startswith(("max_train_steps", "name")):
            assert "# next round:" in line or "# was" in line
        if line.startswith(("metric", "mode", "search", "seed", "eval_every")):
            assert "#" not in line


def test_no_plan_before_three_results_and_names_count_up() -> None:
    spec = make_spec()
    report = analyze_study(spec, trials_frame([trial(1, {"learning_rate": 0.01, "weight_decay": 1e-4}, 0.2)]))
    assert report.next_round is None and report_to_dict(report)["next_round"] is None
    assert next_name("lr") == "lr-r2" and next_name("lr-r2") == "lr-r3"
    assert next_name("lr", taken={"lr-r2", "lr-r3"}) == "lr-r4"
    assert len(next_name("x" * 64)) == 64
