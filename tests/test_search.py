"""Search: quasi-random points stay in range, spread evenly, continue across calls."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.search import bayes_trials, preview, quasi_random_trials, total_trials
from engine.spec import parse_study
from engine.store.base import Trial, TrialState

FOUR_D = """\
[study]
name = "four-d"
workload = "builtin:digits-mlp"
max_train_steps = 100
budget = 64
seed = {seed}
[nuisance]
learning_rate = {{ low = 1e-4, high = 1e-1, scale = "log" }}
weight_decay  = {{ low = 1e-6, high = 1e-2, scale = "log" }}
dropout       = {{ low = 0.0, high = 0.5 }}
label_smoothing = {{ low = 0.0, high = 0.2 }}
"""


def test_sample_cli_64_points_in_range_and_log_even(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FOUR_D.format(seed=3))
    assert main(["sample", str(path), "--n", "64", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial"] for r in rows] == list(range(64))
    lr = np.array([r["learning_rate"] for r in rows])
    wd = np.array([r["weight_decay"] for r in rows])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    assert wd.min() >= 1e-6 and wd.max() <= 1e-2
    assert all(0 <= r["dropout"] <= 0.5 for r in rows)
    # log-even: each of the 3 decades of the lr range holds about a third of the points
    counts = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1])[0]
    assert counts.min() >= 18, counts


def test_sample_csv_has_one_column_per_hyperparameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FOUR_D.format(seed=0))
    assert main(["sample", str(path), "--n", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "trial,learning_rate,weight_decay,dropout,label_smoothing"
    assert len(lines) == 6


def test_sequence_continues_and_new_seed_replicates() -> None:
    spec = parse_study(FOUR_D.format(seed=0))
    whole = quasi_random_trials(spec, 0, 10)
    first, rest = quasi_random_trials(spec, 0, 4), quasi_random_trials(spec, 4, 6)
    assert [t.params for t in first + rest] == [t.params for t in whole]
    other = quasi_random_trials(parse_study(FOUR_D.format(seed=1)), 0, 10)
    assert all(a.params != b.params for a, b in zip(whole, other))


def test_per_value_shares_nuisance_points_and_seeds() -> None:
    text = (FOUR_D.format(seed=0).replace("budget = 64", "budget = 6")
            + '[scientific]\nactivation = { values = ["relu", "tanh"] }\n')
    spec = parse_study(text)
    trials = quasi_random_trials(spec, 0, 3)
    assert total_trials(spec) == 6 and len(trials) == 6
    for a, b in zip(trials[::2], trials[1::2]):
        assert (a.params["activation"], b.params["activation"]) == ("relu", "tanh")
        assert a.params["learning_rate"] == b.params["learning_rate"]
        assert a.seed == b.seed and a.point_index == b.point_index


def test_int_and_categorical_scales() -> None:
    text = """\
[study]
name = "ints"
workload = "builtin:digits-mlp"
max_train_steps = 10
budget = 40
scientific_mode = "joint"
[nuisance]
width = { low = 16, high = 256, scale = "int_log" }
depth = { low = 1, high = 3, scale = "int" }
[scientific]
activation = { values = ["relu", "tanh", "gelu"] }
"""
    rows = preview(parse_study(text))
    assert len(rows) == 40
    assert {r["depth"] for r in rows} == {1, 2, 3}
    assert all(isinstance(r["width"], int) and 16 <= r["width"] <= 256 for r in rows)
    assert {r["activation"] for r in rows} == {"relu", "tanh", "gelu"}


def _trial(i: int, params: dict, value: float | None, state: TrialState) -> Trial:
    return Trial(id=i, study_id=1, number=i, params=params, seed=0, state=state, attempt=1,
                 point_index=i, kind="search", max_train_steps=10, created_at=0.0, best_value=value)


def test_bayesian_is_stateless_counts_diverged_and_batches() -> None:
    text = FOUR_D.format(seed=0).replace("budget = 64", 'budget = 12\nsearch = "bayesian"')
    spec = parse_study(text)
    initial = bayes_trials(spec, [], 4, first_index=0)
    assert len(initial) == 4 and len({json.dumps(t.params, sort_keys=True) for t in initial}) == 4
    assert [t.params for t in bayes_trials(spec, [], 4, first_index=0)] == [t.params for t in initial]
    done = []
    for i, t in enumerate(initial):
        state = TrialState.DIVERGED if t.params["learning_rate"] > 0.03 else TrialState.COMPLETED
        value = None if state == TrialState.DIVERGED else 0.1 + abs(math.log10(t.params["learning_rate"]) + 3)
        done.append(_trial(i, t.params, value, state))
    nxt = bayes_trials(spec, done, 3, first_index=4)
    assert len(nxt) == 3
    assert len({json.dumps(t.params, sort_keys=True) for t in nxt}) == 3
    # the budget is respected: 12 total, so at most 12 - 4 more
    assert len(bayes_trials(spec, done, 50, first_index=4)) == 8
