"""Bayesian search: batches spread out, infeasible trials steer, max mode, restarts continue."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.search import gp_meta_key, gp_protocol_note, load_gp_hyper
from engine.search.bayes import MIN_BATCH_DISTANCE, suggest_batch, surrogate_note
from engine.search.quasi_random import halton_points
from engine.space import Param, RangeParam
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import Storage, TrialProgress, TrialState
from engine.workspace import launch_study, top_up_bayesian

FOUR_D: tuple[RangeParam, ...] = (
    RangeParam("learning_rate", 1e-4, 1e-1, "log"),
    RangeParam("weight_decay", 1e-6, 1e-2, "log"),
    RangeParam("dropout", 0.0, 0.5),
    RangeParam("label_smoothing", 0.0, 0.2),
)
LR = (RangeParam("learning_rate", 1e-4, 1e-1, "log"), RangeParam("dropout", 0.0, 0.5))


def bowl(hp: dict[str, Any]) -> float | None:
    """A validation-error-like bowl; diverges above a learning rate of 0.03."""
    if hp["learning_rate"] > 0.03:
        return None
    lr, wd = math.log10(hp["learning_rate"]), math.log10(hp.get("weight_decay", 1e-4))
    return (0.08 + 0.06 * (lr + 1.8) ** 2 + 0.015 * (wd + 3.8) ** 2
            + 0.3 * (hp["dropout"] - 0.2) ** 2
            + 0.5 * (hp.get("label_smoothing", 0.08) - 0.08) ** 2)


def finished(params: tuple[Param, ...], n: int, f: Callable[[dict[str, Any]], float | None]
             ) -> list[tuple[dict[str, Any], float | None]]:
    return [(hp, f(hp)) for hp in halton_points(params, 7, 0, n)]


def unit(params: tuple[Param, ...], hp: dict[str, Any]) -> np.ndarray:
    return np.array([p.to_unit(hp[p.name]) for p in params])


def test_a_batch_of_8_spreads_out_in_the_unit_cube() -> None:
    # no two points of a batch of 8 closer than 0.03 in the unit cube (MIN_BATCH_DISTANCE,
    # 0.02, is the hard floor; the believer's conditioning spreads them further: 0.04 to 0.21
    # here), noise-free or noisy, whatever the seed
    rng = np.random.default_rng(0)
    clean = finished(FOUR_D, 40, bowl)
    noisy = [(hp, None if v is None else v + rng.normal(0, 0.1)) for hp, v in clean]
    for done, seed in itertools.product((clean, noisy), range(4)):
        batch = suggest_batch(FOUR_D, seed, 200, "min", done, [], 8)
        assert len(batch.points) == 8
        cube = [unit(FOUR_D, p) for p in batch.points]
        closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(cube, 2))
        assert closest >= 0.03 > MIN_BATCH_DISTANCE, (seed, closest)
        assert all(all(p.low <= hp[p.name] <= p.high for p in FOUR_D) for hp in batch.points)


def test_pending_trials_push_the_next_batch_elsewhere() -> None:
    done = finished(FOUR_D, 40, bowl)
    first = suggest_batch(FOUR_D, 0, 200, "min", done, [], 4).points
    second = suggest_batch(FOUR_D, 0, 200, "min", done, first, 4).points
    gaps = [min(np.linalg.norm(unit(FOUR_D, a) - unit(FOUR_D, b)) for b in first) for a in second]
    assert min(gaps) > 1e-3, gaps


def test_diverged_trials_still_steer_the_search_away() -> None:
    # better and better towards a learning rate of 0.01, diverged above it: dropping the
    # diverged trials would let the GP extrapolate the trend into the diverging region
    def edge(hp: dict[str, Any]) -> float | None:
        lr = math.log10(hp["learning_rate"])
        return None if lr > -2 else 1.0 - 0.3 * (lr + 4) + 0.1 * hp["dropout"]

    done = finished(LR, 24, edge)
    assert sum(v is None for _, v in done) >= 6
    steered = suggest_batch(LR, 0, 100, "min", done, [], 8).points
    assert max(p["learning_rate"] for p in steered) < 0.02, steered
    dropped = [(hp, v) for hp, v in done if v is not None]
    blind = suggest_batch(LR, 0, 100, "min", dropped, [], 8).points
    assert max(p["learning_rate"] for p in blind) > 0.03  # the guard can fail


def test_max_mode_climbs_where_min_mode_descends() -> None:
    def peak(hp: dict[str, Any]) -> float:
        return -((hp["dropout"] - 0.35) ** 2) - (math.log10(hp["learning_rate"]) + 2.5) ** 2 / 9

    done = finished(LR, 20, peak)
    up = suggest_batch(LR, 0, 100, "max", done, [], 4).points
    down = suggest_batch(LR, 0, 100, "min", done, [], 4).points
    top = np.array([0.5, 0.7])  # lr 10^-2.5 and dropout 0.35 in the unit square
    assert max(np.linalg.norm(unit(LR, p) - top) for p in up) < 0.2, up
    assert min(np.linalg.norm(unit(LR, p) - top) for p in down) > 0.3, down


def test_a_metric_spanning_orders_of_magnitude_still_homes_in() -> None:
    # (10 x distance)^4: the far corners are 10^4 times the values near the optimum, so on a
    # plain standardized scale the bottom of the bowl is flat within the GP's noise floor and
    # the search wanders (0.055 to 0.066 away after 20 trials without the output warping)
    xy = (RangeParam("x", 0.0, 1.0), RangeParam("y", 0.0, 1.0))

    def steep(hp: dict[str, Any]) -> float:
        return float((10 * math.dist((hp["x"], hp["y"]), (0.3, 0.6))) ** 4)

    for seed in range(3):
        done: list[tuple[dict[str, Any], float | None]] = [(p, steep(p)) for p in halton_points(xy, seed, 0, 10)]
        theta = None
        for _ in range(10):
            batch = suggest_batch(xy, seed, 100, "min", done, [], 1, theta)
            theta = batch.theta
            done += [(p, steep(p)) for p in batch.points]
        closest = min(v for _, v in done if v is not None) ** 0.25 / 10
        assert closest < 0.04, (seed, closest)


def test_the_batch_is_a_function_of_its_inputs_and_theta_warm_starts() -> None:
    done = finished(FOUR_D, 30, bowl)
    a = suggest_batch(FOUR_D, 3, 200, "min", done, [], 6)
    b = suggest_batch(FOUR_D, 3, 200, "min", done, [], 6)
    assert a == b and a.theta is not None
    warm = suggest_batch(FOUR_D, 3, 200, "min", done, [], 6, theta=a.theta)
    assert warm == suggest_batch(FOUR_D, 3, 200, "min", done, [], 6, theta=a.theta)
    assert warm.theta is not None and np.allclose(warm.theta, a.theta, atol=0.05)  # where it started


def test_initial_design_is_the_quasi_random_sequence() -> None:
    first = suggest_batch(FOUR_D, 5, 64, "min", [], [], 4)
    assert first.theta is None
    assert first.points == halton_points(FOUR_D, 5, 0, 4)
    rest = suggest_batch(FOUR_D, 5, 64, "min", [(p, 0.5) for p in first.points], [], 4)
    assert rest.points == halton_points(FOUR_D, 5, 4, 4)  # one value: nothing to model yet


def test_the_protocol_note_says_what_the_gp_saw() -> None:
    assert surrogate_note(120) == "the GP saw all 120 finished trials"
    assert surrogate_note(2000) == "the GP saw the best 200 and 200 random of 2000 finished trials"
    assert load_gp_hyper("not json") == {}
    assert load_gp_hyper('{"{}": [1, 2.5]}') == {"{}": [1.0, 2.5]}


STUDY = """\
[study]
name = "bo"
workload = "builtin:digits-mlp"
max_train_steps = 10
budget = 24
seed = 4
search = "bayesian"
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
weight_decay  = { low = 1e-6, high = 1e-2, scale = "log" }
dropout       = { low = 0.0, high = 0.5 }
label_smoothing = { low = 0.0, high = 0.2 }
"""

NEXT_BATCH = """\
import json, sys
from engine.store import open_store
from engine.workspace import top_up_bayesian
store = open_store(sys.argv[1])
print(json.dumps([t.params for t in top_up_bayesian(store, free_slots=6)]))
"""


def _finish_all(store: Storage) -> None:
    for t in store.claim_trials("w", "cpu", limit=100):
        value = bowl(dict(t.params))
        state = TrialState.DIVERGED if value is None else TrialState.COMPLETED
        store.finish_trial(t.id, TrialProgress(state, best_step=9, best_value=value, steps_done=10))


def test_a_restarted_engine_asks_for_the_same_next_batch(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ws")
    launch = launch_study(store, parse_study(STUDY), initial_bayes=6)
    study = launch.study
    _finish_all(store)
    assert len(top_up_bayesian(store, free_slots=6)) == 6  # the first GP fit, stored
    assert load_gp_hyper(store.get_meta(gp_meta_key(study.id)))
    _finish_all(store)
    store.close()
    shutil.copytree(tmp_path / "ws", tmp_path / "restarted")
    # the engine that kept running, and a new process on a copy of the same workspace
    store = open_store(tmp_path / "ws")
    kept = [dict(t.params) for t in top_up_bayesian(store, free_slots=6)]
    repo = Path(__file__).parents[1]
    fresh = subprocess.run([sys.executable, "-c", NEXT_BATCH, str(tmp_path / "restarted")],
                           capture_output=True, text=True, check=True, cwd=repo)
    assert len(kept) == 6 and json.loads(fresh.stdout) == kept
    note = gp_protocol_note(parse_study(STUDY), store.list_trials(study.id))
    assert note == "the GP saw all 12 finished trials"


def test_in_parallel_one_point_in_eight_is_a_thompson_sample(monkeypatch: Any) -> None:
    # asked 8 at once (8 GPUs), the believer fills 7 and a Thompson sample the trial whose
    # index is 7 mod 8; the 7 are those the believer alone would pick, the 8th is its own
    import engine.search.bayes as bayes

    done = finished(FOUR_D, 40, bowl)
    mixed = suggest_batch(FOUR_D, 3, 200, "min", done, [], 8).points
    monkeypatch.setattr(bayes, "EXPLORE_EVERY", 10**9)
    believer = suggest_batch(FOUR_D, 3, 200, "min", done, [], 8).points
    assert mixed[:7] == believer[:7]
    assert mixed[7] != believer[7]
    cube = [unit(FOUR_D, p) for p in mixed]
    assert min(np.linalg.norm(cube[7] - c) for c in cube[:7]) >= MIN_BATCH_DISTANCE
    # one at a time (one slot), every point is the believer's
    monkeypatch.setattr(bayes, "EXPLORE_EVERY", 8)
    assert [bayes._n_explore(k, 1) for k in range(40, 48)] == [0] * 7 + [1]  # index 47
    single = suggest_batch(FOUR_D, 3, 200, "min", done + [(p, bowl(p)) for p in believer[:7]], [], 1)
    monkeypatch.setattr(bayes, "EXPLORE_EVERY", 10**9)
    assert single.points == suggest_batch(
        FOUR_D, 3, 200, "min", done + [(p, bowl(p)) for p in believer[:7]], [], 1).points


def test_the_share_of_thompson_samples_does_not_depend_on_how_asks_are_split() -> None:
    from engine.search.bayes import _n_explore

    for start in range(0, 24):
        whole = _n_explore(start, 16)
        assert whole == 2
        assert _n_explore(start, 4) + _n_explore(start + 4, 12) == whole
        assert sum(_n_explore(start + i, 1) for i in range(16)) == whole


def test_few_trials_per_dimension_share_one_length_scale_then_each_gets_its_own() -> None:
    """Below three trials per dimension the kernel has one length scale (theta: amplitude,
    length scale, noise); from there on one per dimension. The stored shared-scale theta does
    not warm-start the per-dimension fit (it is ignored, as for no theta at all)."""
    points = halton_points(FOUR_D, 3, 0, 12)
    finished = [(p, bowl(p)) for p in points]
    few = suggest_batch(FOUR_D, 3, 40, "min", finished[:11], [], 2)
    assert few.theta is not None and len(few.theta) == 3
    enough = suggest_batch(FOUR_D, 3, 40, "min", finished, [], 2, theta=few.theta)
    assert enough.theta is not None and len(enough.theta) == len(FOUR_D) + 2
    assert enough.points == suggest_batch(FOUR_D, 3, 40, "min", finished, [], 2).points


def test_a_pending_trial_is_believed_as_a_noisy_result_not_a_certain_one() -> None:
    """A pending trial (or a point already in the batch) is conditioned on at its posterior
    mean *with the fitted noise*: the model stays as unsure of its value as one real result
    would leave it, so on a noisy objective the rest of the batch is not pushed away from the
    incumbent by fantasies surer than any measurement (README, "Bayesian search")."""
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern

    from engine.search.acquisition import Posterior

    rng = np.random.default_rng(0)
    signal = ConstantKernel(1.0) * Matern([0.3, 0.3], nu=2.5)
    X, y, noise = rng.random((10, 2)), rng.standard_normal(10), 0.1
    x0 = np.array([[0.5, 0.5]])
    _, sd = Posterior(signal, noise, X, y, None, "kb").gp.predict(x0, return_std=True)
    prior_var = float(sd[0] ** 2)  # of the latent value at x0, given the data
    believed = Posterior(signal, noise, X, y, x0, "kb")
    _, sd = believed.gp.predict(x0, return_std=True)
    assert float(sd[0] ** 2) == pytest.approx(prior_var * noise / (prior_var + noise), rel=1e-6)
    assert float(sd[0] ** 2) > 0.2 * prior_var  # a noiseless lie would leave ~1e-6 of it


def branin(hp: dict[str, Any]) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    x1, x2 = hp["x1"], hp["x2"]
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def test_the_search_does_not_spend_trials_re_measuring_a_point_it_tried() -> None:
    """Branin, study seed 37, one trial at a time: the GP grew sure that the edge x1 = 10 was
    best, and re-measured x1 = 10, x2 = 3.003 (value 1.943) at steps of 1e-6 of the range for
    40 of 64 trials; the minimum (0.398) is 0.04 of the range inward. A pick that close to a
    tried point (REPEAT_WITHIN length scales) becomes a Thompson sample, which finds it."""
    params = (RangeParam("x1", -5.0, 10.0), RangeParam("x2", 0.0, 15.0))
    done: list[tuple[dict[str, Any], float | None]] = []
    theta = None
    for _ in range(32):
        batch = suggest_batch(params, 37, 64, "min", done, [], 1, theta)
        theta = batch.theta or theta
        done += [(hp, branin(hp)) for hp in batch.points]
    cube = [unit(params, hp) for hp, _ in done]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(cube, 2))
    assert closest > 1e-5, closest
    assert min(v for _, v in done if v is not None) < 0.4  # the optimum is 0.397887
