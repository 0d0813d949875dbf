"""Ask/tell from the command line, and an engine whose loop never waits on a GP fit.

``create`` registers a study without trials; ``ask`` hands out the study's own next points
as RUNNING trials no engine claims; ``tell`` records results as a worker would (NaN/inf is
DIVERGED), so ``report`` reads them. Bad input is one line on stderr, exit 2, and nothing
recorded; a results file is taken whole or not at all. The engine's Bayesian top-up stores
proposals computed ahead in a background thread, while its loop keeps beating.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.runner.daemon import Engine
from engine.runner.slots import plan_slots
from engine.runner.suggest import Suggester
from engine.search import quasi_random_trials
from engine.spec import parse_study
from engine.store import open_store
from engine.store.base import NewTrial, Storage, TrialProgress, TrialState
from engine.workspace import BayesAsk, BayesProposal, launch_study, top_up_bayesian
from tuneplay_tui.launcher import main as tuneplay

BAYES = """\
[study]
name = "bo"
workload = "builtin:digits-mlp"
max_train_steps = 10
budget = 8
seed = 4
search = "bayesian"
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
dropout       = { low = 0.0, high = 0.5 }
"""

QUASI = """\
[study]
name = "qr"
workload = "builtin:digits-mlp"
max_train_steps = 10
budget = 6
seed = 2
[scientific]
activation = { values = ["relu", "tanh"] }
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
"""


class Cli:
    """The ``tuneplay`` command in this process, on one workspace."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir, self.workspace, self.capsys = tmp_path, tmp_path / "ws", capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = tuneplay(["--workspace", str(self.workspace), *args])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def write(self, name: str, text: str) -> str:
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def store(self) -> Storage:
        return open_store(self.workspace)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    yield Cli(tmp_path, capsys)


def _asked(cli: Cli, study: str, n: int) -> list[dict[str, Any]]:
    rc, out, err = cli("ask", study, "--n", str(n))
    assert rc == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _recorded(store: Storage) -> tuple[Any, ...]:
    """Everything a tell could have written."""
    trials = tuple((t.id, t.state, t.best_value, t.best_step, t.steps_done) for t in store.list_trials())
    return trials, tuple(store.read_metrics())


def test_create_ask_tell_report_and_a_top_up_to_the_budget(cli: Cli) -> None:
    rc, out, _ = cli("create", cli.write("bo.toml", BAYES))
    assert rc == 0 and "registered" in out and "0/8 done" in out
    store = cli.store()
    (study,) = store.list_studies()
    assert store.list_trials() == []  # nothing queued, and no engine started
    assert not (cli.workspace / "engine.pid").exists()

    asked = _asked(cli, "bo", 3)
    assert [set(a) for a in asked] == [{"trial", "seed", "max_train_steps", "params"}] * 3
    assert all(a["max_train_steps"] == 10 and 1e-4 <= a["params"]["learning_rate"] <= 0.1 for a in asked)
    assert "width" in asked[0]["params"]  # the whole config: the baseline's values too
    trials = store.list_trials(study.id)
    assert [t.state for t in trials] == [TrialState.RUNNING] * 3
    assert all(t.worker == "ask" and not t.lease_token for t in trials)
    assert store.claim_trials("w", "cpu", limit=10) == []  # no engine takes them
    assert store.expired_leases() == []

    a, b, c = (x["trial"] for x in asked)
    curve = cli.write("curve.jsonl", '{"step": 0, "val_error": 0.6, "train_loss": 2.0}\n\n'
                                     '{"step": 4, "val_error": 0.2}\n{"step": 9, "val_error": 0.3}\n')
    assert cli("tell", "bo", str(a), "--metrics", curve)[:2] == (0, f"trial {a}: COMPLETED, val_error 0.2\n")
    assert cli("tell", "bo", str(b), "--value", "0.25")[0] == 0
    assert cli("tell", "bo", str(c), "--value", "inf")[1] == f"trial {c}: DIVERGED\n"
    got = {t.id: t for t in store.list_trials(study.id)}
    assert (got[a].state, got[a].best_value, got[a].best_step, got[a].steps_done) == (TrialState.COMPLETED, 0.2, 4, 10)
    assert (got[b].state, got[b].best_value, got[b].best_step) == (TrialState.COMPLETED, 0.25, None)
    assert (got[c].state, got[c].best_value) == (TrialState.DIVERGED, None)
    assert len(store.read_metrics(trial_ids=[a])) == 4

    rc, out, err = cli("report", "bo", "--format", "json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["n_trials"] == 3 and report["state_counts"]["DIVERGED"] == 1
    assert report["best"]["trial_id"] == a and report["best"]["value"] == 0.2
    assert "3/8 done" in cli("status")[1]

    # an engine (here its top-up, engine-less) fills the rest of the budget, never more
    added = top_up_bayesian(store, free_slots=4)
    assert len(added) == 4 and all(t.state == TrialState.QUEUED for t in added)
    assert len(top_up_bayesian(store, free_slots=10)) == 1  # 3 asked + 5 queued = the budget of 8
    rc, _, err = cli("ask", "bo")
    assert rc == 2 and "all 8 trials of its budget" in err


def test_ask_continues_the_quasi_random_sequence_and_an_engine_tops_it_up(cli: Cli) -> None:
    assert cli("create", path := cli.write("qr.toml", QUASI))[0] == 0
    rc, out, err = cli("ask", "qr", "--n", "3", "--format", "csv")
    assert rc == 0 and "4 trials handed out, not 3" in err  # whole comparisons: 2 points x 2 values
    header, *rows = out.splitlines()
    assert header.startswith("trial,seed,max_train_steps,") and len(rows) == 4
    store = cli.store()
    (study,) = store.list_studies()
    spec = parse_study(QUASI)
    expected = quasi_random_trials(spec, 0, 2)
    assert [dict(t.params) for t in store.list_trials()] == [dict(t.params) for t in expected]
    assert cli("tell", "qr", str(store.list_trials()[0].id), "--state", "failed")[0] == 0
    assert store.get_trial(store.list_trials()[0].id).state == TrialState.FAILED
    # the engine's top-up enqueues the missing points, after the asked ones
    Suggester(store).step(2)
    queued = store.list_trials(study.id, states=[TrialState.QUEUED])
    assert [dict(t.params) for t in queued] == [dict(t.params) for t in quasi_random_trials(spec, 2, 1)]
    assert len(store.list_trials(study.id)) == 6
    assert cli("run", path, "--no-engine")[1].startswith("study 'qr' continued: 0 trials enqueued")


def _bad_input_cases(cli: Cli, ids: list[int], other: int, finished: int, queued: int) -> list[tuple[list[str], str]]:
    a, b = ids
    bad_curve = cli.write("bad.jsonl", '{"step": 0, "val_error": 0.5}\n{"step": 1, "val_error": "x"}\n')
    not_json = cli.write("notjson.jsonl", '{"step": 0, "val_error": 0.5}\n{"step": 1,\n')
    no_metric = cli.write("nometric.jsonl", '{"step": 0, "train_loss": 0.5}\n')
    # a results file whose first line is good and whose third is not: nothing at all is recorded
    half = cli.write("half.jsonl", f'{{"trial": {a}, "value": 0.1}}\n\n{{"trial": {b}, "valu": 0.2}}\n')
    twice = cli.write("twice.jsonl", f'{{"trial": {a}, "value": 0.1}}\n{{"trial": {a}, "value": 0.2}}\n')
    foreign = cli.write("foreign.jsonl", f'{{"trial": {a}, "value": 0.1}}\n{{"trial": {other}, "value": 0.2}}\n')
    done = cli.write("done.jsonl", f'{{"trial": {a}, "curve": [{{"step": 1, "val_error": 0.3}}]}}\n'
                                   f'{{"trial": {finished}, "value": 0.2}}\n')
    bad_point = cli.write("badpoint.jsonl", f'{{"trial": {a}, "curve": [{{"step": -1, "val_error": 0.3}}]}}\n')
    return [
        (["tell", "bo", "999", "--value", "0.1"], "trial 999: no such trial"),
        (["tell", "bo", str(other), "--value", "0.1"], f"trial {other} belongs to study 'other', not 'bo'"),
        (["tell", "bo", str(finished), "--value", "0.1"], f"trial {finished} is already COMPLETED"),
        (["tell", "bo", str(queued), "--value", "0.1"], f"trial {queued} is QUEUED in an engine"),
        (["tell", "bo", str(a), "--value", "abc"], "--value 'abc': not a number"),
        (["tell", "bo", str(a), "--state", "done"], "--state 'done': expected one of failed, diverged"),
        (["tell", "bo", str(a), "--metrics", bad_curve], f"{bad_curve}:2: val_error: expected a number"),
        (["tell", "bo", str(a), "--metrics", not_json], f"{not_json}:2: not JSON"),
        (["tell", "bo", str(a), "--metrics", no_metric], f"{no_metric}: no 'val_error' values"),
        (["tell", "bo", str(a), "--metrics", str(cli.dir / "missing.jsonl")], "missing.jsonl: cannot read it"),
        (["tell", "bo", "--file", half], f"{half}:3: give \"trial\" and one of"),
        (["tell", "bo", "--file", twice], f"{twice}:2: trial {a} is told twice (first on line 1)"),
        (["tell", "bo", "--file", foreign], f"{foreign}:2: trial {other} belongs to study 'other'"),
        (["tell", "bo", "--file", done], f"{done}:2: trial {finished} is already COMPLETED"),
        (["tell", "bo", "--file", bad_point], f"{bad_point}:1: curve[0]: step: expected a whole number"),
        (["tell", "bo", str(a), "--value", "0.1", "--state", "failed"], "tell: give one of"),
        (["tell", "bo", str(a), "--file", half], "tell: --file takes results of many trials and no TRIAL"),
        (["tell", "nope", str(a), "--value", "0.1"], "no study named 'nope'"),
        (["ask", "bo", "--n", "0"], "--n: must be between 1 and"),
    ]


def test_bad_input_is_one_line_exit_2_and_nothing_recorded(cli: Cli) -> None:
    assert cli("create", cli.write("bo.toml", BAYES))[0] == 0
    assert cli("create", cli.write("other.toml", BAYES.replace('"bo"', '"other"')))[0] == 0
    ids = [a["trial"] for a in _asked(cli, "bo", 3)]
    other = _asked(cli, "other", 1)[0]["trial"]
    finished = ids.pop()
    assert cli("tell", "bo", str(finished), "--value", "0.3")[0] == 0
    store = cli.store()
    bo = store.find_study("bo")
    assert bo is not None
    (queued,) = store.add_trials(bo.id, [NewTrial({"learning_rate": 0.01, "dropout": 0.1}, 0)])
    before = _recorded(store)
    for args, message in _bad_input_cases(cli, ids, other, finished, queued.id):
        rc, out, err = cli(*args)
        assert (rc, out) == (2, ""), (args, rc, out, err)
        assert err.count("\n") == 1 and message in err, (args, err)
        assert _recorded(store) == before, args
    good = cli.write("good.jsonl", "".join(f'{{"trial": {i}, "value": 0.5}}\n' for i in ids))
    assert cli("tell", "bo", "--file", good)[0] == 0
    assert cli("tell", "bo", "--file", good)[0] == 2  # nothing is recorded twice
    assert [store.get_trial(i).best_value for i in ids] == [0.5, 0.5]


# -- the engine's top-up: computed ahead, off the loop ------------------------------------
def _bayes_store(tmp_path: Path, finished: int) -> tuple[Storage, int]:
    store = open_store(tmp_path / "ws")
    study = launch_study(store, parse_study(BAYES.replace("budget = 8", "budget = 30")), initial_bayes=finished).study
    for i, t in enumerate(store.claim_trials("w", "cpu", limit=finished)):
        end = TrialProgress(TrialState.COMPLETED, best_step=9, best_value=0.1 + 0.05 * i, steps_done=10)
        store.finish_trial(t.id, end)
    return store, study.id


def _settle(suggester: Suggester) -> None:
    while suggester.busy():
        time.sleep(0.01)


def test_a_freed_slot_gets_a_trial_computed_before_it_freed(tmp_path: Path) -> None:
    store, sid = _bayes_store(tmp_path, 6)
    open_gate = threading.Event()
    open_gate.set()

    def gated(ask: BayesAsk) -> BayesProposal:
        open_gate.wait(30)
        return ask.compute()

    suggester = Suggester(store, gated)
    assert suggester.step(2) == []  # the first proposals are being computed
    _settle(suggester)
    assert len(suggester.step(2)) == 2  # and the next ones start computing at once
    _settle(suggester)
    assert suggester.step(2) == []  # both slots busy: nothing stored, nothing recomputed
    assert not suggester.busy()
    running, _ = store.claim_trials("w", "cpu", limit=2)
    store.finish_trial(running.id, TrialProgress(TrialState.COMPLETED, best_value=0.05, steps_done=10))
    open_gate.clear()  # every fit from now on hangs until the gate opens
    refill = suggester.step(2)
    assert len(refill) == 1, "the freed slot waited for a fit"
    assert suggester.busy()  # the proposals are refreshed with the new result meanwhile
    open_gate.set()
    _settle(suggester)
    # a restarted engine computes the same proposals from what is stored
    suggester.step(2)
    _settle(suggester)
    again = Suggester(store)
    again.step(2)
    _settle(again)
    assert again.step(2) == suggester.step(2) == []  # adopt what was computed; no slot free
    assert again.ahead[sid].proposal.trials == suggester.ahead[sid].proposal.trials


def test_the_engine_loop_keeps_beating_during_a_slow_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, sid = _bayes_store(tmp_path, 6)
    fitting, release = threading.Event(), threading.Event()
    compute = BayesAsk.compute

    def slow(ask: BayesAsk) -> BayesProposal:
        fitting.set()
        release.wait(30)  # a fit that takes as long as the test says
        return compute(ask)

    monkeypatch.setattr(BayesAsk, "compute", slow)
    engine = Engine(store, tmp_path, plan_slots(cpu_slots=2, gpus=[]))
    for step in ("_reap", "_check_stale", "_fit_slots", "_check_idle", "_shutdown"):
        monkeypatch.setattr(engine, step, lambda: None)  # no worker processes here
    loop = threading.Thread(target=engine.loop, daemon=True)
    loop.start()
    try:
        assert fitting.wait(10)
        beats = set()
        for _ in range(10):
            beats.add(store.get_meta("engine.heartbeat"))
            time.sleep(0.25)
        assert len(beats) >= 5, beats  # the loop beat on while the fit ran
        assert not store.list_trials(sid, states=[TrialState.QUEUED])
        release.set()
        deadline = time.time() + 30
        while len(store.list_trials(sid, states=[TrialState.QUEUED])) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(store.list_trials(sid, states=[TrialState.QUEUED])) == 2
    finally:
        release.set()
        engine.stopping = True
        loop.join(10)
